"""`python -m server` as an operator runs it: grpcurl, health, logs, flags, graceful shutdown."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy import ROOT
from harness.processes import ServerProcess, start_workers
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.storage.migrations import LATEST
from tests.support.databases import query, write_lock
from tests.support.helpers import PHONE

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


def _grpcurl(*args: str) -> str:
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout


def test_grpcurl_lists_and_describes_the_service(server_process: ServerProcess) -> None:
    listed = _grpcurl(server_process.target, "list").split()
    assert {"sarah.v1.SarahService", "grpc.health.v1.Health"} <= set(listed)
    described = _grpcurl(server_process.target, "describe", "sarah.v1.SarahService")
    for rpc in ("GetState", "UpsertState", "ListLeads", "GetStats", "DeleteState",
                "ChangeIdentity", "WatchLeads", "ListEvents", "GetActivity"):
        assert f"rpc {rpc} (" in described
    assert "right to erasure" in described  # the proto comments travel with reflection
    message = _grpcurl(server_process.target, "describe", "sarah.v1.UpsertStateRequest")
    assert "add_messages" in message and "Idempotency key" in message


def test_grpcurl_upsert_get_and_stats(server_process: ServerProcess) -> None:
    body = '{"contact_phone": "0812-3456-7890", "lead_score": 45, "lead_temperature": "warm"}'
    stored = _grpcurl("-d", body, server_process.target, "sarah.v1.SarahService/UpsertState")
    assert '"contact_phone": "+6281234567890"' in stored and '"lead_temperature": "warm"' in stored
    read = _grpcurl("-d", '{"contact_phone": "6281234567890"}', server_process.target,
                    "sarah.v1.SarahService/GetState")
    assert '"lead_score": 45' in read
    history = _grpcurl("-d", '{"contact_phone": "081234567890"}', server_process.target,
                       "sarah.v1.SarahService/ListEvents")
    assert '"revision": "1"' in history and '"lead_score"' in history  # a path it changed
    activity = _grpcurl("-d", '{"time_zone": "Asia/Makassar", "days": 1}',
                        server_process.target, "sarah.v1.SarahService/GetActivity")
    assert '"new_leads": 1' in activity and '"time_zone": "Asia/Makassar"' in activity
    stats = _grpcurl("-d", "{}", server_process.target, "sarah.v1.SarahService/GetStats")
    assert '"total": 1' in stats


def test_health_reports_serving(server_process: ServerProcess) -> None:
    with grpc.insecure_channel(server_process.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sarah.v1.SarahService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_one_log_line_per_call_with_method_status_and_duration(
        server_process: ServerProcess) -> None:
    with grpc.insecure_channel(server_process.target) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.GetState(pb.GetStateRequest(contact_phone="08123"), timeout=10)
    log = server_process.stop()
    assert "method=/sarah.v1.SarahService/GetState code=OK duration_ms=" in log
    assert "method=/sarah.v1.SarahService/GetState code=INVALID_ARGUMENT" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_call_in_flight_at_shutdown_completes(
        server_process: ServerProcess, database_url, sig) -> None:
    with grpc.insecure_channel(server_process.target) as channel, \
            write_lock(database_url) as lock:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        # The held write lock keeps the next upsert running when the signal lands.
        result: dict = {}

        def call() -> None:
            request = pb.UpsertStateRequest(contact_phone=PHONE, lead_score=77)
            result["reply"] = stub.UpsertState(request, timeout=15)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        server_process.proc.send_signal(sig)
        time.sleep(0.5)
        lock.release()
        caller.join(timeout=15)
    assert result["reply"].lead_score == 77
    assert server_process.proc.wait(timeout=20) == 0  # the one signal was enough
    log = server_process.stop()
    assert "shutting down" in log and "stopped" in log
    # The write is on disk: the closed database opens with the value in it.
    assert query(database_url, "SELECT lead_score FROM conversation") == [(77,)]


def test_new_calls_are_refused_after_shutdown(server_process: ServerProcess) -> None:
    server_process.stop()
    with grpc.insecure_channel(server_process.target) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_burst_of_signals_does_not_hang_the_server(
        server_process: ServerProcess, sig: signal.Signals) -> None:
    # A second signal landing inside the first one's handler once deadlocked the server
    # (Event.set() re-entered its own lock); SIGTERM came twice when make run's supervisor
    # was killed. A burst of SIGHUPs (key reloads) must leave it serving, then SIGTERM
    # still stops it.
    for _ in range(200):
        server_process.proc.send_signal(sig)
    if sig == signal.SIGHUP:
        with grpc.insecure_channel(server_process.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=10)
    server_process.stop(signal.SIGTERM, timeout=20)
    assert server_process.proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--default-region", "XX"], "unknown phone region"),
        (["--threads", "zero"], "--threads"),
        (["--workers", "many"], "--workers: expected a number or auto, got 'many'"),
        (["--max-queued-calls", "-1"], "--max-queued-calls must be 0 or more"),
        (["--database-url", "nosuch://x/y"], "unsupported database URL"),
        (["--purge-inactive-days", "0"], "--purge-inactive-days: must be a number of days above 0"),
        (["--purge-inactive-days", "-30"], "--purge-inactive-days: must be a number of days"),
        (["--purge-inactive-days", "soon"], "--purge-inactive-days: expected a number of days"),
        (["--history-days", "0"], "--history-days: must be a number of days above 0"),
        (["--history-days", "inf"], "--history-days: must be a number of days above 0"),
        (["--housekeeping-seconds", "0"], "--housekeeping-seconds must be above 0"),
    ],
)
def test_bad_configuration_fails_clearly(args, says, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "server", "--listen", "127.0.0.1:0", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert says in done.stderr and "Traceback" not in done.stderr


def test_a_bad_purge_setting_in_the_environment_fails_clearly() -> None:
    done = subprocess.run([sys.executable, "-m", "server", "--listen", "127.0.0.1:0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "SARAH_PURGE_INACTIVE_DAYS": "-1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--purge-inactive-days: must be a number of days above 0, got '-1'" in done.stderr


def test_environment_variables_configure_the_server(database_url) -> None:
    proc = ServerProcess(env={"SARAH_LISTEN": "127.0.0.1:0",
                              "SARAH_DATABASE_URL": database_url,
                              "SARAH_DEFAULT_REGION": "US"})
    try:
        with grpc.insecure_channel(proc.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            reply = stub.GetState(pb.GetStateRequest(contact_phone="(415) 555-0123"), timeout=10)
        assert reply.contact_phone == "+14155550123"
    finally:
        proc.stop()
    assert query(database_url, "SELECT COUNT(*) FROM schema_migrations") == [(LATEST,)]


def test_call_past_its_grace_does_not_crash_the_shutdown(database_url) -> None:
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url,
                         "--grace-seconds", "0.2")
    with grpc.insecure_channel(proc.target) as channel, write_lock(database_url) as lock:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stub.GetStats(pb.GetStatsRequest(), timeout=10)
        caller = threading.Thread(target=lambda: pytest.raises(
            grpc.RpcError, stub.UpsertState, pb.UpsertStateRequest(contact_phone=PHONE),
            timeout=15))
        caller.start()
        time.sleep(0.5)  # the upsert now waits for the lock
        proc.proc.send_signal(signal.SIGTERM)
        time.sleep(1)  # past the grace: the call is cancelled, its thread still waits
        lock.release()
        caller.join(timeout=15)
    assert proc.proc.wait(timeout=20) == 0  # closed the database after the thread, no crash
    proc.stop()  # reads the rest of its log and closes the pipe


def test_workers_serve_on_consecutive_ports_and_stop_together(database_url) -> None:
    workers = start_workers(2, database_url)
    try:
        assert workers.ports == [workers.port, workers.port + 1]
        for port in workers.ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = sarah_pb2_grpc.SarahServiceStub(channel)
                stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, add_messages=1),
                                 timeout=30, wait_for_ready=True)
        with grpc.insecure_channel(workers.target) as channel:
            lead = sarah_pb2_grpc.SarahServiceStub(channel).GetState(
                pb.GetStateRequest(contact_phone=PHONE), timeout=10)
        assert lead.message_count == 2  # both processes wrote to the one database
    finally:
        out = workers.stop()
    assert workers.proc.returncode == 0, out
    assert out.count("stopped") >= 2 and "Traceback" not in out
