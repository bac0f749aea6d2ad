"""Podman for the container tests (tests/deploy/): set up for this machine, and everything a
run makes (containers, pods, volumes, images) named or labelled after the run, so that its
end removes exactly that and nothing of anyone else's.

Stock podman fails here as root in a sandbox without CAP_SYS_RESOURCE: it asks runc to raise
the containers' open-file and process limits above what this process may have ("error
setting rlimit type 7: operation not permitted"). A containers.conf of the run's own sets
runc and limits this process holds: "If the CONTAINERS_CONF path environment variable is
set, just this path will be used" (containers.conf(5), FILES), so nothing of the machine's
configuration changes.
"""

import os
import resource
import shutil
import subprocess
import uuid
from pathlib import Path

LABEL = "io.sarah.deploy-test"
# Threads and processes one container may have (RLIMIT_NPROC): a server runs 8 + 256
# threads at most. Here runc failed to set anything above 32768 (this kernel's pid_max),
# even under this process's own limit, so it is set well below that.
_PROCESSES = 4096
_FILES = 65536


def _containers_conf() -> str:
    files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], _FILES)
    processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], _PROCESSES)
    return ("[containers]\n"
            f'default_ulimits = ["nofile={files}:{files}", "nproc={processes}:{processes}"]\n'
            "[engine]\n"
            'runtime = "runc"\n')


class Podman:
    """podman commands for one test run, whose objects are all called `prefix`-something."""

    def __init__(self, workdir: Path):
        missing = [tool for tool in ("podman", "runc", "mmdebstrap") if not shutil.which(tool)]
        if missing:
            raise AssertionError(f"{', '.join(missing)} not installed: `make deploy-test` "
                                 "installs them (apt-get, as root)")
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"sarah-dt-{self.run_id}"
        conf = workdir / "containers.conf"
        conf.write_text(_containers_conf())
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self._had_pause_image = bool(self("images", "-q", "--filter",
                                          "reference=localhost/podman-pause").stdout.split())

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def logs(self, container: str) -> str:
        done = self("logs", container, check=False, timeout=30)
        return done.stdout + done.stderr

    def remove_pod(self, pod: str) -> None:
        """Remove a pod and its containers, with the anonymous volumes they made."""
        for container in self("ps", "-aq", "--filter", f"pod={pod}", check=False).stdout.split():
            self("rm", "--force", "--volumes", "--time", "0", container, check=False)
        self("pod", "rm", "--force", "--time", "0", pod, check=False)

    def clean_up(self) -> None:
        """Remove every container, pod, volume and image of this run (the base stays)."""
        def listed(*args: str) -> list[str]:
            return self(*args, check=False, timeout=60).stdout.split()

        for pod in listed("pod", "ps", "-q", "--filter", f"name={self.prefix}"):
            self.remove_pod(pod)
        for container in listed("ps", "-aq", "--filter", f"name={self.prefix}"):
            # --volumes: the anonymous volume of the image's VOLUME /data too.
            self("rm", "--force", "--volumes", "--time", "0", container, check=False,
                 timeout=120)
        for volume in listed("volume", "ls", "-q", "--filter", f"name={self.prefix}"):
            self("volume", "rm", "--force", volume, check=False)
        # Every layer of this run's builds carries its label (podman build --label).
        images = listed("images", "-aq", "--filter", f"label={LABEL}={self.run_id}")
        if images:
            self("rmi", "--force", *images, check=False, timeout=300)
        # podman builds its pods' pause image on first use; if this run made it, it goes.
        if not self._had_pause_image:
            for image in listed("images", "-q", "--filter", "reference=localhost/podman-pause"):
                self("rmi", image, check=False)
