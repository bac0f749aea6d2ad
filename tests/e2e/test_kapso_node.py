"""The README's Kapso Function nodes, taken from README.md as written and run under real
Node against a real server and Envoy that require API keys: a phone lead, a lead known by
its BSUID only, and one with both keys, each read, written, retried and read again."""

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import SarahClient
from deploy import ROOT
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.envoy import EnvoyProcess

_LOGGER = logging.getLogger(__name__)

KAPSO_KEY = "kapso-key-0d7e"
_RUNNER = Path(__file__).parent / "kapso" / "run_nodes.js"
_NODES = ("load_state", "save_state")


def ensure_node() -> str:
    """Node's path, installing Debian's nodejs first when it is missing (as root); a
    machine that cannot get it fails the test rather than skipping the README's check."""
    found = shutil.which("node")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("node is missing: install it (apt-get install -y nodejs) and run again")
    _LOGGER.warning("node is missing; installing nodejs with apt-get")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs"], check=True)
    found = shutil.which("node")
    assert found, "nodejs installed, yet no node on PATH"
    return found


def readme_js() -> str:
    """Every ```js block of the README's Kapso section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Calling from Kapso", 1)[1].split("\n## ", 1)[0]
    return "\n".join(block.split("\n```", 1)[0] for block in section.split("```js\n")[1:])


def test_readme_nodes_have_kapsos_signature() -> None:
    code = readme_js()
    for node in _NODES:
        assert f"async function {node}({{ trigger, nodes, env }})" in code
    assert "env.SARAH_URL" in code and "env.SARAH_API_KEY" in code and "x-api-key" in code
    assert "request_id: trigger.message.id" in code


@pytest.fixture
def envoy(tmp_path: Path) -> Iterator[EnvoyProcess]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KAPSO_KEY} * kapso\n")
    server: RunningServer = create_server(Config(
        listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path / 'sarah.db'}",
        api_keys_file=str(keys), metrics_listen="127.0.0.1:0"))
    proxy = EnvoyProcess(server.port, tmp_path)
    try:
        yield proxy
    finally:
        proxy.stop()
        server.shutdown(grace=None)


@pytest.fixture
def run_nodes(tmp_path: Path, envoy: EnvoyProcess) -> Any:
    node = ensure_node()
    script = tmp_path / "nodes.js"
    script.write_text(readme_js() + "\n\n" + _RUNNER.read_text())

    def run(trigger: dict[str, Any], steps: list[str], key: str = KAPSO_KEY) -> dict[str, Any]:
        case = {
            "trigger": trigger,
            "nodes": {"score_lead": {"output": {
                "state": "qualifying", "lead_score": 45, "lead_temperature": "warm",
                "extracted_data": {"business_type": "restaurant", "team_size": None}}}},
            "env": {"SARAH_URL": f"http://127.0.0.1:{envoy.port}", "SARAH_API_KEY": key},
            "steps": [{"node": name, "as": f"{i}:{name}"} for i, name in enumerate(steps)],
        }
        done = subprocess.run([node, str(script), json.dumps(case)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    return run


def _trigger(message_id: str, *, phone: str | None = None, bsuid: str | None = None,
             username: str | None = None) -> dict[str, Any]:
    """An inbound message as Kapso hands it to a Function node; absent keys are null."""
    return {
        "message": {"id": message_id, "type": "text", "text": {"body": "halo"}},
        "contact": {
            "phone_number": f"+{phone}" if phone else None, "wa_id": phone,
            "business_scoped_user_id": bsuid, "parent_business_scoped_user_id": None,
            "username": username,
        },
    }


_CASES = {
    "phone only": _trigger("wamid.NODE1", phone="6281211110000"),
    "BSUID only": _trigger("wamid.NODE2", bsuid="ID.4455667788990011", username="tokodewi"),
    "both keys": _trigger("wamid.NODE3", phone="6281222220000", bsuid="ID.1122334455667788"),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_readme_nodes_read_write_and_count_each_message_once(
        name: str, run_nodes: Any, envoy: EnvoyProcess) -> None:
    trigger = _CASES[name]
    contact = trigger["contact"]
    out = run_nodes(trigger, ["load_state", "save_state", "save_state", "load_state"])
    before, saved, retried, after = (out[f"{i}:{n}"] for i, n in enumerate(
        ["load_state", "save_state", "save_state", "load_state"]))
    assert "thrown" not in before, before
    assert before["etag"] == "" and before["state"] == "greeting", before  # the default
    phone = contact["phone_number"] or ""
    bsuid = contact["business_scoped_user_id"] or ""
    for lead in (saved, retried, after):
        assert (lead["contact_phone"], lead["business_scoped_user_id"]) == (phone, bsuid), lead
        assert lead["message_count"] == 1, lead  # the retry, same message id, counted once
        assert (lead["state"], lead["lead_score"]) == ("qualifying", 45), lead
        assert lead["username"] == (contact["username"] or ""), lead
    assert after == saved
    with SarahClient(f"127.0.0.1:{envoy.port}", token=KAPSO_KEY) as sarah:
        [stored] = list(sarah.iter_leads())
    assert (stored.contact_phone, stored.business_scoped_user_id) == (phone, bsuid)


def test_a_wrong_api_key_is_refused_with_401(run_nodes: Any) -> None:
    out = run_nodes(_CASES["BSUID only"], ["load_state"], key="not-a-key")
    assert "SarahService 401" in out["0:load_state"]["thrown"], out


def test_the_two_halves_of_one_person_end_as_one_lead(run_nodes: Any,
                                                       envoy: EnvoyProcess) -> None:
    """First seen by phone, then by BSUID alone, then with both keys: one lead."""
    run_nodes(_trigger("wamid.HALF1", phone="6281233330000"), ["save_state"])
    run_nodes(_trigger("wamid.HALF2", bsuid="ID.9988776655443322"), ["save_state"])
    out = run_nodes(_trigger("wamid.HALF3", phone="6281233330000", bsuid="ID.9988776655443322"),
                    ["save_state"])
    merged = out["0:save_state"]
    assert (merged["contact_phone"], merged["business_scoped_user_id"]) == (
        "+6281233330000", "ID.9988776655443322"), merged
    assert merged["message_count"] == 3, merged
    with SarahClient(f"127.0.0.1:{envoy.port}", token=KAPSO_KEY) as sarah:
        assert len(list(sarah.iter_leads())) == 1
