"""`make run`'s supervisor and the documented way to run it under a process manager,
envoy.yaml's validity, the README's tour in the order written, and docs/kapso.md's curl
examples."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy import ROOT
from deploy.envoy_config import envoy_binary
from harness.envoy import envoy_config
from harness.http_calls import request
from harness.ports import free_port, free_ports
from harness.processes import start_workers
from harness.waiting import still_holding, wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.config import cpus
from tests.support.docs import curl_example, docs_blocks, shell_lines
from tests.support.stack import MakeRunStack, start_stack

ENVOY = envoy_binary()
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def test_envoy_config_validates() -> None:
    done = subprocess.run([ENVOY, "--mode", "validate", "-c", "envoy.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_admin_listens_on_loopback_only() -> None:
    text = (ROOT / "envoy.yaml").read_text()
    admin = text[text.index("admin:"):text.index("static_resources:")]
    assert "address: 127.0.0.1" in admin and "0.0.0.0" not in text


class RunningStack(MakeRunStack):
    """`python -m tools.stack` on free ports, as `make run` starts it; `own_session` as
    `make run` starts it in a terminal."""

    def __init__(self, workdir: Path, own_session: bool = False):
        http, admin, grpc_port = free_port(), free_port(), free_port()
        config = workdir / "envoy.yaml"
        config.write_text(envoy_config(http, admin, grpc_port))
        super().__init__(workdir, config, grpc_port=grpc_port, http_port=http,
                         admin_port=admin, own_session=own_session)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.admin_port, self.grpc_port]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path)
    yield running
    running.stop()  # SIGTERM if it still runs: the supervisor stops its children in order


def _children(pid: int) -> list[int]:
    done = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                          text=True)
    return [int(p) for p in done.stdout.split()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stack_serves_and_stops_both_cleanly(stack: RunningStack, sig: int) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.send_signal(sig)
    out = stack.output()
    assert stack.proc.returncode == 0, out
    assert f"HTTP/JSON and gRPC on 127.0.0.1:{stack.port}" in out
    assert f"listening on 127.0.0.1:{stack.grpc_port}" in out
    assert "Traceback" not in out
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_stack_stops_envoy_and_fails_when_the_server_dies(stack: RunningStack) -> None:
    server_pid = next(pid for pid in _children(stack.proc.pid)
                      if "server" in Path(f"/proc/{pid}/cmdline").read_text())
    subprocess.run(["kill", "-KILL", str(server_pid)], check=True)
    out = stack.output()
    assert stack.proc.returncode != 0
    assert "server exited" in out
    assert not _children(stack.proc.pid)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """Running, not ended (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_the_supervisor_ends_the_stack(stack: RunningStack) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.kill()  # SIGKILL: no handler runs, the kernel tells the children
    assert still_holding(stack.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []


def test_closing_the_terminal_stops_the_stack(tmp_path: Path) -> None:
    stack = RunningStack(tmp_path, own_session=True)
    try:
        children = _children(stack.proc.pid)
        os.killpg(stack.proc.pid, signal.SIGHUP)  # what a closing terminal sends its job
        out = stack.output()
    finally:
        stack.stop()  # SIGTERM only if the hangup did not stop it
    assert stack.proc.returncode == 0, out
    assert still_holding(stack.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []
    assert "Traceback" not in out


def test_a_server_on_a_served_port_says_so_and_exits(stack: RunningStack,
                                                      tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{stack.grpc_port}",
         "--database-url", f"sqlite:///{tmp_path / 'other.db'}", "--metrics-listen", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    port = stack.grpc_port
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stack_on_a_served_http_port_stops_and_says_why(stack: RunningStack,
                                                          tmp_path: Path) -> None:
    grpc_port = free_port()
    config = tmp_path / "second.yaml"
    config.write_text(envoy_config(stack.port, free_port(), grpc_port))
    second = start_stack(tmp_path, config, grpc_port)
    try:
        out, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 1, out
    assert "stopped because envoy exited with status 1" in out
    assert f"cannot bind '127.0.0.1:{stack.port}': Address already in use" in out
    assert not _listening(grpc_port)  # its server was stopped too
    assert request("127.0.0.1", stack.port, "GET", "/sarah/stats")[0] == 200  # first one intact


def _sqlite_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'sarah.db'}"


def test_killing_the_workers_supervisor_ends_its_workers(tmp_path: Path) -> None:
    workers = start_workers(2, _sqlite_url(tmp_path))
    children = _children(workers.proc.pid)
    assert len(children) == 2
    workers.proc.kill()
    workers.proc.wait()
    assert still_holding(workers.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []
    workers.stop()  # reads the rest of their log and closes the pipe


def _stats_code(port: int, key: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            sarah_pb2_grpc.SarahServiceStub(channel).GetStats(
                pb.GetStatsRequest(), metadata=[("authorization", f"Bearer {key}")], timeout=10)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_sighup_to_the_workers_supervisor_reloads_every_workers_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("old-key *\n")
    workers = start_workers(2, _sqlite_url(tmp_path), "--api-keys-file", str(keys))
    try:
        codes = {_stats_code(p, "new-key") for p in workers.ports}
        assert codes == {grpc.StatusCode.UNAUTHENTICATED}
        keys.write_text("old-key *\nnew-key *\n")
        workers.proc.send_signal(signal.SIGHUP)  # as to one server: re-read the keys file
        wait_until(lambda: {_stats_code(p, "new-key") for p in workers.ports}
                   == {grpc.StatusCode.OK}, 10, "every worker to reload its keys")
    finally:
        out = workers.stop()
    assert workers.proc.returncode == 0, out
    assert out.count("reloaded 2 API keys") == 2


def test_every_curl_example_of_the_kapso_page_works(stack: RunningStack) -> None:
    blocks = docs_blocks("docs/kapso.md", "Calling from Kapso (HTTP/JSON through Envoy)", "sh")
    commands = [line for block in blocks for line in shell_lines(block)]
    assert len(commands) >= 6 and all(c.startswith("curl ") for c in commands), commands
    for command in commands:
        curl_example(command, stack.port)


# The tour's hot lead, made by its curl step, and what its Python step prints.
_TOUR_LEAD, _TOUR_PRINTS = "+6281377778888", "+6281377778888 82"


def _tour_env() -> dict[str, str]:
    """A terminal's environment, no PYTHONPATH (the examples must not need one) and no
    COLUMNS (a pipe gets the CLI's wide tables)."""
    return {name: value for name, value in os.environ.items()
            if name not in ("PYTHONPATH", "COLUMNS", "LINES")}


def test_the_readme_tour_runs_in_the_order_written(stack: RunningStack, tmp_path: Path) -> None:
    """The README's five-minute tour, each line as written in its order against one fresh
    stack: grpcurl, curl, the command line (whose `leads --temperature hot` finds the hot
    lead, and whose import loads the export it made), then the Python example, run as a
    script from a folder holding a checkout named `sarah` (/srv beside /srv/sarah)."""
    # The reader's checkout: its .venv is this one, and the CLI's files land here.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = _tour_env()
    exports: list[str] = []
    printed: dict[str, list[str]] = {}
    grpcurl, curl, cli = docs_blocks("README.md", "A five-minute tour", "sh")
    for command in shell_lines(grpcurl) + shell_lines(curl) + shell_lines(cli):
        written = command.split(" #", 1)[0].strip()  # the command without its comment
        if command.startswith("export "):
            exports.append(command)  # for the lines after it, as in one terminal
        elif command.startswith("curl "):
            printed.setdefault(written, []).append(curl_example(command, stack.port))
        else:
            script = "\n".join([*exports, command
                                .replace("127.0.0.1:50051", f"127.0.0.1:{stack.grpc_port}")])
            done = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True,
                                  text=True, timeout=60,
                                  env={**env, "SARAH_TARGET": f"127.0.0.1:{stack.grpc_port}"})
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            printed.setdefault(written, []).append(done.stdout)
    assert exports == ['export PATH="$PWD/.venv/bin:$PATH"']
    assert len([c for c in printed if c.startswith("grpcurl ")]) >= 5
    hot_before, hot_after = printed[".venv/bin/sarah leads --temperature hot"]
    for hot in (hot_before, hot_after):
        assert _TOUR_LEAD in hot and "\n1 lead" in hot, hot
    [imported] = printed[".venv/bin/sarah import leads.jsonl"]
    assert "imported  │ 1" in imported and "unchanged │ 2" in imported, imported
    assert (checkout / "leads.jsonl").read_text().count("\n") == 3

    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "sarah").symlink_to(ROOT)  # the checkout as /srv/sarah, the example in /srv
    [example] = docs_blocks("README.md", "4. From Python", "python")
    (srv / "hot.py").write_text(example.replace("127.0.0.1:50051",
                                                f"127.0.0.1:{stack.grpc_port}"))
    done = subprocess.run([str(srv / "sarah" / ".venv" / "bin" / "python"), "hot.py"], cwd=srv,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, (
        done.stderr, "a .venv made before the compat editable install: "
                     "rm .venv/.installed && make .venv/.installed")
    assert done.stdout.splitlines() == [_TOUR_PRINTS]


def _unit_settings() -> dict[str, list[str]]:
    """docs/operations.md's systemd unit: each setting's values, in order."""
    [unit] = docs_blocks("docs/operations.md", "Running under a process manager", "ini")
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("[", "#")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_documented_unit_runs_the_stack_and_its_sigterm_stops_it(tmp_path: Path) -> None:
    """The unit's ExecStart in its WorkingDirectory (the checkout under test for
    /srv/sarah), with what its Environment names under data/ made here: a keys file, and an
    Envoy config on free ports (plaintext; test_kapso_deploy serves the TLS one). Stopping
    it as KillMode=mixed does, SIGTERM to that pid alone, stops Envoy and the server, and
    it exits 0."""
    unit = _unit_settings()
    [home], [exec_start] = unit["WorkingDirectory"], unit["ExecStart"]
    assert unit["KillMode"] == ["mixed"]
    environment = dict(value.split("=", 1) for value in unit["Environment"])
    assert set(environment) == {"SARAH_API_KEYS_FILE", "SARAH_ENVOY_CONFIG"}, environment
    http, admin, grpc_port = free_port(), free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(http, admin, grpc_port))
    keys = tmp_path / "api-keys.txt"
    keys.write_text("sk_unit * systemd\n")
    proc = subprocess.Popen(
        shlex.split(exec_start.replace(home, str(ROOT))), cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SARAH_API_KEYS_FILE": str(keys),
             "SARAH_ENVOY_CONFIG": str(config),
             # Its own ports and database; one worker, the one port Envoy lists.
             "SARAH_LISTEN": f"127.0.0.1:{grpc_port}", "SARAH_WORKERS": "1",
             "SARAH_METRICS_LISTEN": "127.0.0.1:0",
             "SARAH_DATABASE_URL": f"sqlite:///{tmp_path / 'sarah.db'}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: request("127.0.0.1", http, "GET", "/sarah/stats",
                                   headers={"x-api-key": "sk_unit"})[0] == 200,
                   30, "the unit's stack to serve", interval=0.2, ignoring=(OSError,))
        children = _children(proc.pid)
        assert len(children) == 2
        assert request("127.0.0.1", http, "GET", "/sarah/stats")[0] == 401  # its keys file
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert still_holding([http, admin, grpc_port], _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []


def test_make_run_serves_the_dashboard_page_at_the_root(stack: RunningStack) -> None:
    status, headers, page = request("127.0.0.1", stack.port, "GET", "/",
                                    headers={"content-type": None})
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert page == (ROOT / "dashboard" / "index.html").read_text()


def test_grpcurl_works_through_envoy(stack: RunningStack) -> None:
    target = f"127.0.0.1:{stack.port}"
    listed = subprocess.run([GRPCURL, "-plaintext", target, "list"], capture_output=True,
                            text=True, timeout=30, check=True).stdout.split()
    assert "sarah.v1.SarahService" in listed
    subprocess.run([GRPCURL, "-plaintext", "-d", '{"contact_phone": "0812-3456-7890"}', target,
                    "sarah.v1.SarahService/UpsertState"], capture_output=True, timeout=30,
                   check=True)
    stats = subprocess.run([GRPCURL, "-plaintext", "-d", "{}", target,
                            "sarah.v1.SarahService/GetStats"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert '"total": 1' in stats


def test_make_run_with_workers_auto_balances_over_one_worker_per_cpu(tmp_path: Path) -> None:
    workers = cpus()
    http, admin, *grpc_ports = free_ports(2 + workers)
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(http, admin, grpc_ports[0]))
    # SARAH_WORKERS as an operator sets it (`auto` is also the default).
    stack = MakeRunStack(tmp_path, config, grpc_port=grpc_ports[0], http_port=http,
                         admin_port=admin, env={"SARAH_WORKERS": "auto"})
    try:
        healthy = "/stats?filter=^cluster.sarah_grpc.membership_healthy$"
        wait_until(lambda: str(request("127.0.0.1", admin, "GET", healthy)[2]).strip()
                   .endswith(f": {workers}"), 30, "Envoy to find every worker healthy")
        served: dict[int, int] = {}

        def every_worker_served() -> bool:
            assert request("127.0.0.1", http, "GET", "/sarah/stats")[0] == 200
            _, _, clusters = request("127.0.0.1", admin, "GET", "/clusters")
            served.update({int(port): int(count) for port, count in re.findall(
                r"sarah_grpc::127\.0\.0\.1:(\d+)::rq_total::(\d+)", str(clusters))})
            assert set(served) == set(grpc_ports[:workers]), clusters
            return all(served.values())

        wait_until(every_worker_served, 30, "Envoy to spread calls over every worker")
    finally:
        out = stack.stop()
    for port in grpc_ports[:workers]:
        assert f"listening on 127.0.0.1:{port}" in out
