"""A fresh virtual environment holding the built sarah-service wheel and exactly the
distributions its requirements name (for the extras asked for), taken from this one.

Offline and quick: the wheel is built from a copy of the checkout (no build/ or egg-info
left behind) and installed without dependencies; each required distribution's files are
linked in from this interpreter's site-packages, following Requires-Dist as pip would.
A module that no requirement brings in is simply not there.
"""

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy import ROOT

# What the wheel is built from: pyproject.toml's package list and its readme.
_SOURCES = ["pyproject.toml", "README.md", "client", "server", "sarah"]


def build_wheel(folder: Path) -> Path:
    """The sarah-service wheel, built in `folder` from a copy of the checkout."""
    source = folder / "src"
    source.mkdir()
    for name in _SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(folder / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = (folder / "dist").glob("*.whl")
    return wheel


def _requirements(dist: metadata.Distribution, extras: Iterable[str]) -> list[Requirement]:
    """`dist`'s own requirements, and those of `extras`, whose markers hold here."""
    wanted: list[Requirement] = []
    for line in dist.requires or ():
        requirement = Requirement(line)
        environments = [{"extra": extra} for extra in ("", *extras)]
        if requirement.marker is None or any(requirement.marker.evaluate(env)
                                             for env in environments):
            wanted.append(requirement)
    return wanted


def closure(root: metadata.Distribution, extras: Iterable[str]) -> dict[str, metadata.Distribution]:
    """Every distribution `root` needs with `extras`, by canonical name, as installed here."""
    found: dict[str, metadata.Distribution] = {}
    pending = _requirements(root, extras)
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        if name == canonicalize_name(root.metadata["Name"]):  # an extra naming another
            pending += _requirements(root, requirement.extras)
            continue
        dist = found.setdefault(name, metadata.distribution(requirement.name))
        pending += _requirements(dist, requirement.extras)
    return found


def _link(dist: metadata.Distribution, site: Path) -> None:
    """Symlink `dist`'s files (not its scripts, which live outside site-packages)."""
    for file in dist.files or ():
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        source = Path(str(dist.locate_file(file)))
        target = site / file
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)


def make_venv(folder: Path, wheel: Path, extras: Iterable[str] = ()) -> tuple[Path, list[str]]:
    """A venv in `folder` with `wheel` and its requirements for `extras`: (its python, the
    canonical names of the distributions linked in)."""
    extras = list(extras)
    env = folder / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300, env=isolated_env())  # a PYTHONPATH'd checkout reads as installed
    [site] = env.glob("lib/python*/site-packages")
    built = metadata.Distribution.at(next(site.glob("sarah_service-*.dist-info")))
    needed = closure(built, extras)
    for dist in needed.values():
        _link(dist, site)
    return python, sorted(needed)


def isolated_env() -> dict[str, str]:
    """This process's environment without what would add paths to a child Python's
    sys.path (the tests' PYTHONPATH, the user's site-packages)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, "PYTHONNOUSERSITE": "1"}
