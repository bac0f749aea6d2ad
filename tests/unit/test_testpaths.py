"""`make test` runs every folder of tests/ but tests/deploy and tests/ha (make deploy-test
and make ha-test run those)."""

import tomllib

from deploy import ROOT

_ALONE = {"tests/deploy", "tests/ha"}  # run by its own target, never by a bare `pytest`


def test_testpaths_name_every_test_folder_but_the_ones_run_alone() -> None:
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]["testpaths"]
    folders = {f"tests/{path.parent.name}" for path in (ROOT / "tests").glob("*/test_*.py")}
    assert set(testpaths) == folders - _ALONE
    assert not list((ROOT / "tests").glob("test_*.py")), "a test module outside the folders"
