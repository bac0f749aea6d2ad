"""Debian packages the tests and the bench need (chromium, nodejs, nghttp2-client),
installed with apt-get when missing and running as root."""

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

# apt-get fails at once when another apt-get holds its locks, and parallel test workers
# (or another checkout's suite on the same machine) may install at the same moment: one
# install at a time through this file, and a wait for anyone else's dpkg.
_LOCK = Path(tempfile.gettempdir()) / "sarah-apt-get.lock"
_WAIT_FOR_DPKG = ("-o", "DPkg::Lock::Timeout=600")


def apt_install(*packages: str) -> None:
    """Install `packages`, updating the package lists first only if the install fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *_WAIT_FOR_DPKG, "install", "-y", "-qq", *packages]
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(install, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
