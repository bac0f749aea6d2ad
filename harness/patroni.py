"""A PostgreSQL failover cluster on loopback for tests/ha: one etcd member and Patroni
nodes, from Debian's packages (patroni, etcd-server, postgresql-15), installed when missing.

Every node runs the same Patroni config (docs/operations.md's, given by the test) and gets
what is its own from Patroni's environment variables (PATRONI_NAME, PATRONI_POSTGRESQL_*,
PATRONI_RESTAPI_*, PATRONI_ETCD3_HOSTS and the passwords), as an operator's would. Patroni
runs as the `postgres` user (PostgreSQL refuses root) through runuser when this runs as root.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from harness.apt import apt_install
from harness.ports import free_port, is_free
from harness.processes import LoggedProcess
from harness.waiting import still_holding, wait_until

PACKAGES = {"patroni": "/usr/bin/patroni", "etcd-server": "/usr/bin/etcd",
            "postgresql-15": "/usr/lib/postgresql/15/bin/postgres"}
BIN_DIR = "/usr/lib/postgresql/15/bin"
_AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
# A replica's state in Patroni's /cluster: "running" in Patroni 3.0 (Debian 12's), later
# "streaming" once it receives WAL.
_REPLICATING = ("running", "streaming")


def install_packages() -> None:
    """Debian's patroni, etcd-server and PostgreSQL 15, those missing (as root only)."""
    missing = [package for package, path in PACKAGES.items() if not os.path.exists(path)]
    if missing:
        assert os.geteuid() == 0, f"missing {missing}: apt-get install them, or run as root"
        apt_install(*missing)


def _get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read() or b"null")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return ""


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Etcd(LoggedProcess):
    """One etcd member: the DCS Patroni keeps its leader key in."""

    def __init__(self, workdir: Path):
        self.client_port, peer_port = free_port(), free_port()
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{peer_port}"
        super().__init__("etcd", [
            "etcd", "--name", "etcd0", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"etcd0={peer}", "--initial-cluster-state", "new"], workdir)
        with self.stopped_on_failure():
            wait_until(self._healthy, 30, "etcd to be healthy", ignoring=(OSError,))

    def _healthy(self) -> bool:
        self.check_alive()
        return _get_json(f"http://127.0.0.1:{self.client_port}/health")[1].get("health") == "true"


class PatroniNode:
    """One Patroni node and the PostgreSQL it runs, on ports of its own."""

    def __init__(self, name: str, workdir: Path, config: Path, env: dict[str, str]):
        self.name = name
        self.workdir = workdir
        self.config = config
        self.pg_port, self.api_port = free_port(), free_port()
        self.data_dir = workdir / name / "data"
        (workdir / name).mkdir()
        shutil.chown(workdir / name, "postgres", "postgres")
        self.env = {**env, "PATRONI_NAME": name, **self._addresses(),
                    "PATRONI_POSTGRESQL_DATA_DIR": str(self.data_dir),
                    "PATRONI_POSTGRESQL_BIN_DIR": BIN_DIR,
                    "PATRONI_POSTGRESQL_PGPASS": str(workdir / name / "pgpass")}
        self.process: LoggedProcess | None = None
        self.starts = 0
        self.up = False  # started, and not lost or stopped since

    def start(self) -> None:
        """Start Patroni; on a restart, on new ports if another process took the old ones
        while the node was down (the machine's other programs draw from the same range)."""
        if self.starts and not (is_free(self.pg_port) and is_free(self.api_port)):
            self.pg_port, self.api_port = free_port(), free_port()
            self.env.update(self._addresses())
        self.starts += 1
        self.up = True
        # runuser passes no environment on but its own: the variables go through env(1).
        argv = [*_AS_POSTGRES, "env", *(f"{k}={v}" for k, v in self.env.items()),
                "patroni", str(self.config)]
        self.process = LoggedProcess(f"patroni-{self.name}-{self.starts}", argv, self.workdir)

    def _addresses(self) -> dict[str, str]:
        return {"PATRONI_RESTAPI_LISTEN": f"127.0.0.1:{self.api_port}",
                "PATRONI_RESTAPI_CONNECT_ADDRESS": f"127.0.0.1:{self.api_port}",
                "PATRONI_POSTGRESQL_LISTEN": f"127.0.0.1:{self.pg_port}",
                "PATRONI_POSTGRESQL_CONNECT_ADDRESS": f"127.0.0.1:{self.pg_port}"}

    def patroni_pid(self) -> int | None:
        """Patroni's own process: runuser's child, or the process itself without runuser."""
        if self.process is None or self.process.proc.poll() is not None:
            return None
        pid = self.process.proc.pid
        if not _AS_POSTGRES:
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return int(children[0]) if children else None

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def log(self) -> str:
        """What Patroni (and PostgreSQL under it) logged since its last start."""
        return "" if self.process is None else self.process.log_path.read_text(errors="replace")

    def api(self, path: str) -> tuple[int, Any]:
        return _get_json(f"http://127.0.0.1:{self.api_port}{path}")

    def lose(self) -> None:
        """The node is lost: Patroni and the postmaster SIGKILLed at once, no clean-up."""
        self.up = False
        pids = [pid for pid in (self.patroni_pid(), self.postmaster_pid()) if pid]
        for pid in pids:
            _kill(pid)
        assert self.process is not None
        self.process.proc.wait(timeout=30)
        assert not still_holding(pids, _alive, within=30), "the lost node lives on"

    def stop(self) -> None:
        """SIGTERM to Patroni itself, which stops PostgreSQL and exits (not to runuser: it
        would SIGKILL Patroni 2 s later, mid-shutdown); whatever is left after 60 s, the
        postmaster included, is killed."""
        self.up = False
        postmaster = self.postmaster_pid()
        if self.process is not None and self.process.proc.poll() is None:
            patroni = self.patroni_pid()
            if patroni:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(patroni, signal.SIGTERM)
            try:
                self.process.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                if patroni:
                    _kill(patroni)
            self.process.stop(timeout=10)
        if postmaster and still_holding([postmaster], _alive, within=30):
            _kill(postmaster)


class PatroniCluster:
    """etcd and `size` Patroni nodes of one cluster (`scope`), all running `config` (a
    Patroni YAML config, the same for every node). Users and passwords are the cluster's own,
    made up here."""

    def __init__(self, config: dict[str, Any], size: int = 3):
        install_packages()
        # The postgres user must reach it: pytest's folders are private to root.
        self.workdir = Path(tempfile.mkdtemp(prefix="sarah-ha-"))
        self.workdir.chmod(0o755)
        self.scope = str(config["scope"])
        self.config_path = self.workdir / "patroni.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.config_path.chmod(0o644)
        self.superuser = ("postgres", secrets.token_urlsafe(16))
        env = {"PATRONI_SUPERUSER_USERNAME": self.superuser[0],
               "PATRONI_SUPERUSER_PASSWORD": self.superuser[1],
               "PATRONI_REPLICATION_USERNAME": "replicator",
               "PATRONI_REPLICATION_PASSWORD": secrets.token_urlsafe(16),
               "PATRONI_REWIND_USERNAME": "rewinder",
               "PATRONI_REWIND_PASSWORD": secrets.token_urlsafe(16)}
        self.etcd: Etcd | None = None
        self.nodes: dict[str, PatroniNode] = {}
        try:
            self.etcd = Etcd(self.workdir)
            env["PATRONI_ETCD3_HOSTS"] = f"127.0.0.1:{self.etcd.client_port}"
            self.ctl_env = {**os.environ, "PATRONI_ETCD3_HOSTS": env["PATRONI_ETCD3_HOSTS"]}
            for i in range(1, size + 1):
                node = PatroniNode(f"pg{i}", self.workdir, self.config_path, env)
                self.nodes[node.name] = node
                node.start()
            self.wait_settled(size, timeout=120)
        except BaseException as failed:
            failed.add_note(self.logs())
            self.stop()
            raise

    def url(self, user: str, password: str, database: str) -> str:
        """The multi-host URL of `database` on every node, as the service is given it."""
        hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes.values())
        return f"postgresql://{user}:{password}@{hosts}/{database}?target_session_attrs=read-write"

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url(*self.superuser, database)

    def members(self) -> list[dict[str, Any]]:
        """The members as Patroni's /cluster lists them (name, role, state, lag ...), asked
        of the first node that answers."""
        for node in self.nodes.values():
            try:
                status, cluster = node.api("/cluster")
            except OSError:
                continue
            if status == 200:
                return list(cluster.get("members", []))
        return []

    def leader(self) -> str | None:
        return next((m["name"] for m in self.members() if m["role"] == "leader"
                     and m["state"] == "running"), None)

    def sync_standby(self) -> str | None:
        return next((m["name"] for m in self.members() if m["role"] == "sync_standby"
                     and m["state"] in _REPLICATING), None)

    def settled(self, count: int) -> bool:
        """`count` members: a running leader, and replicas that replicate from it (on its
        timeline, their lag known), one of them its synchronous standby."""
        members = self.members()
        leaders = [m for m in members if m["role"] == "leader" and m["state"] == "running"]
        if len(members) != count or len(leaders) != 1:
            return False
        timeline = leaders[0].get("timeline")
        replicas = [m for m in members if m is not leaders[0]]
        return (any(m["role"] == "sync_standby" for m in replicas)
                and all(m["state"] in _REPLICATING and m.get("timeline") == timeline
                        and isinstance(m.get("lag"), int) for m in replicas))

    def wait_settled(self, count: int, timeout: float = 90) -> None:
        def settled() -> bool:
            for node in self.nodes.values():
                if node.up and node.process is not None:
                    node.process.check_alive()
            return self.settled(count)

        wait_until(settled, timeout,
                   f"{count} Patroni members with a leader and a synchronous standby",
                   interval=0.5)

    def switchover(self, candidate: str) -> None:
        """A planned switchover to `candidate` (the synchronous standby), now, unasked."""
        leader = self.leader()
        assert leader is not None, "no leader to switch over from"
        done = subprocess.run(
            ["patronictl", "-c", str(self.config_path), "switchover", self.scope,
             "--leader", leader, "--candidate", candidate, "--force"],
            env=self.ctl_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def logs(self) -> str:
        return "".join(f"==> {path.name}\n{path.read_text(errors='replace')[-4000:]}\n"
                       for path in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        """The replicas (at once), the leader, etcd, then the folder: nothing this started is
        left running. The leader goes last: stopping, it asks the others whether one could
        take over, which takes seconds of timeouts while they are stopping too."""
        leader = self.leader()
        replicas = [node for name, node in self.nodes.items() if name != leader]
        with ThreadPoolExecutor(max(1, len(replicas))) as pool:
            list(pool.map(PatroniNode.stop, replicas))
        if leader is not None:
            self.nodes[leader].stop()
        if self.etcd is not None:
            self.etcd.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
