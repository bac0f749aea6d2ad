"""`python -m tools.base_image`: the Containerfile's base, debian:bookworm-slim, made on this
machine from Debian's packages, for a host that reaches Debian's mirror but no container
registry (CI's). Kept once made; `--force` makes it again.

mmdebstrap --variant=minbase installs what Priority: required and apt hold, the set of
Docker's debian:bookworm-slim, from Debian's mirror (its default for a stable release:
main, updates and security). The merged-/usr hook sets up /usr as bookworm has it without
the usrmerge package, which would pull in Perl (47 MB); documentation, man pages and
locales are left out as the slim image leaves them, and the dpkg settings that leave them
out stay in the image, for what its builds install. `podman import` then tags it
localhost/debian:bookworm-slim, which `FROM debian:bookworm-slim` finds first.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TAG = "debian:bookworm-slim"
_SUITE = "bookworm"
_LEFT_OUT = ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*",
             "/usr/share/info/*", "/usr/share/lintian/*"]
_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")


def exists(env: dict[str, str] | None = None) -> bool:
    """Whether the base image is in podman's local storage."""
    done = subprocess.run(["podman", "image", "exists", TAG], env=env, timeout=60)
    return done.returncode == 0


def make(env: dict[str, str] | None = None) -> float:
    """Build the root file system and import it as TAG; the seconds it took."""
    started = time.monotonic()
    dpkg = [f"--dpkgopt=path-exclude={path}" for path in _LEFT_OUT]
    # Copyright files stay: they are the licences of what the image ships.
    dpkg.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    with tempfile.TemporaryDirectory(prefix="sarah-base-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                        f"--hook-dir={_HOOK}", "--quiet", *dpkg, _SUITE, str(tarball)],
                       check=True, timeout=900, env=env)
        subprocess.run(["podman", "import", "--quiet", "--change", 'CMD ["bash"]',
                        str(tarball), TAG], check=True, timeout=300, env=env,
                       stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.base_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="make it even if it exists")
    args = parser.parse_args(argv)
    if exists() and not args.force:
        print(f"{TAG} exists (--force makes it again)")
        return 0
    if os.geteuid() != 0:
        print("mmdebstrap --mode=root needs root", file=sys.stderr)
        return 1
    print(f"made {TAG} in {make():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
