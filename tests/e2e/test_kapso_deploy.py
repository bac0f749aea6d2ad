"""docs/kapso.md's "Deploying for Kapso", line by line: a scratch folder stands for
/srv/sarah, and four substitutions stand for what a test host lacks (the page names them):
the checkout under test for the clone; certbot's deploy hook, run with a certificate for
sarah.example.com from a throwaway CA, for certbot; a free port for 443 (so no setcap);
and --resolve with --cacert so curl reaches sarah.example.com here. Then a renewal by the
same hook while a Kapso-like client keeps calling with its key: no call fails."""

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from deploy import ROOT
from harness.envoy import envoy_config
from harness.http_calls import https_connection, https_get
from harness.ports import free_port
from harness.waiting import wait_until
from tests.support.docs import docs_blocks
from tests.support.stack import MakeRunStack
from tools import certificates

HOST = "sarah.example.com"


def _deploy_commands() -> list[str]:
    """The shell lines of docs/kapso.md's "Deploying for Kapso" code blocks, in order."""
    blocks = docs_blocks("docs/kapso.md", "Deploying for Kapso", "sh")
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class Host:
    """The scratch folder as the host's /srv/sarah, and the commands run in it."""

    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "srv-sarah"
        self.home.mkdir()
        (self.home / ".venv").symlink_to(Path(sys.executable).parent.parent)
        self.port, self.admin_port, self.grpc_port = free_port(), free_port(), free_port()
        self.base = tmp_path / "envoy.yaml"  # envoy.yaml with its admin and upstream moved
        self.base.write_text(envoy_config(self.port, self.admin_port, self.grpc_port))
        self.authority = certificates.new_authority()
        self.ca = tmp_path / "ca.crt"
        self.ca.write_bytes(certificates.certificate_pem(self.authority))
        self.lineage = tmp_path / "letsencrypt-live"
        self.hook = ""
        self.stack: MakeRunStack | None = None
        self.outputs: list[str] = []

    def shell(self, command: str, env: dict[str, str] | None = None) -> str:
        command = command.replace("/srv/sarah", str(self.home))
        done = subprocess.run(["bash", "-c", command], cwd=self.home, capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done.stdout

    def certbot_issues(self) -> int:
        """What certbot does: a certificate in RENEWED_LINEAGE, then the deploy hook."""
        issued = certificates.issue(self.authority, [HOST])
        self.lineage.mkdir(exist_ok=True)
        (self.lineage / "fullchain.pem").write_bytes(issued.chain_pem)
        (self.lineage / "privkey.pem").write_bytes(issued.key_pem)
        self.shell(self.hook, env={"RENEWED_LINEAGE": str(self.lineage)})
        return issued.serial

    def run(self, command: str) -> None:
        argv = shlex.split(command)
        if argv[:2] == ["git", "clone"] or argv[0] == "make":
            return  # the checkout under test, its .venv already installed
        if argv[:2] == ["sudo", "certbot"]:
            self.hook = argv[argv.index("--deploy-hook") + 1]
            self.certbot_issues()
        elif argv[:2] == ["sudo", "setcap"]:
            assert "envoy" in command  # not needed on a free port above 1023
        elif argv[-2:] == ["make", "run"]:
            env = dict(word.split("=", 1) for word in argv[:-2])
            self.stack = MakeRunStack(
                self.home, self.home / env.pop("SARAH_ENVOY_CONFIG"), grpc_port=self.grpc_port,
                http_port=self.port, admin_port=self.admin_port,
                env={name: str(self.home / value) for name, value in env.items()})
        elif argv[0] == "curl":
            assert self.stack is not None, f"{command} runs before the stack starts"
            reach = (f"curl --resolve {HOST}:{self.port}:127.0.0.1 --cacert {self.ca}")
            self.outputs.append(self.shell(
                command.replace("curl", reach, 1)
                .replace(f"https://{HOST}/", f"https://{HOST}:{self.port}/")))
        else:
            if "tools.edge_tls config" in command:
                command = (command.replace("0.0.0.0:443", f"127.0.0.1:{self.port}")
                           + f" --base {self.base}")
            self.shell(command)


def test_the_docs_deploy_sarah_for_kapso(tmp_path: Path) -> None:
    commands = _deploy_commands()
    assert commands[0].startswith("git clone") and any("certbot" in c for c in commands)
    host = Host(tmp_path)
    try:
        for command in commands:
            host.run(command)
        assert host.stack is not None
        with_key, without = map(json.loads, host.outputs)
        assert with_key["total"] == 0 and with_key["by_state"], with_key
        assert without["code"] == 16, without  # UNAUTHENTICATED: no key, no answer

        # Kapso calls with its key while certbot renews: the hook puts the new one in place.
        key = (host.home / "data" / "kapso-toko.key").read_text().strip()
        first = https_get(https_connection(host.port, host.ca, HOST), "/sarah/stats",
                          {"x-api-key": key})[2]
        seen: list[int] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def kapso() -> None:
            while not stop.is_set():
                conn = https_connection(host.port, host.ca, HOST)
                try:
                    status, body, serial = https_get(conn, "/sarah/stats", {"x-api-key": key})
                    assert status == 200, body
                    seen.append(serial)
                except BaseException as failed:  # noqa: BLE001 -- every failure is reported
                    failures.append(failed)
                    return
                finally:
                    conn.close()

        caller = threading.Thread(target=kapso)
        caller.start()
        try:
            wait_until(lambda: seen or failures, 30, "Kapso's first calls")
            renewed = host.certbot_issues()
            wait_until(lambda: renewed in seen or failures, 30, "the renewed certificate")
        finally:
            stop.set()
            caller.join(timeout=60)
        assert not failures, failures
        assert seen[0] == first != renewed and seen[-1] == renewed
        assert host.stack.proc.poll() is None, "Envoy was not restarted"
    finally:
        if host.stack is not None:
            host.stack.stop()
