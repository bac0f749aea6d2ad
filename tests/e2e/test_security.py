"""docs/operations.md's "Security" section, sentence by sentence: API keys, tenant
isolation, secure defaults, metrics and readiness."""

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from deploy import ROOT
from harness.envoy import EnvoyProcess
from harness.processes import ServerProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api.auth import hash_key
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.helpers import PHONE
from tests.support.servers import serving

ADMIN_KEY = "admin-key-5f1c"
TOKO_KEY = "toko-key-93ab"
OTHER_PHONE = "+14155550123"


def _write_keys(path: Path, *lines: str) -> Path:
    path.write_text("# key workspace label\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    # One key stored as its hash, as docs/operations.md recommends; one in the clear.
    return _write_keys(tmp_path / "keys.txt", f"{hash_key(ADMIN_KEY)} * operations",
                       f"{TOKO_KEY} toko kapso toko")


@pytest.fixture
def secured(database_url: str, keys_file: Path) -> Iterator[RunningServer]:
    with serving(database_url, api_keys_file=str(keys_file),
                 metrics_listen="127.0.0.1:0") as server:
        yield server


@pytest.fixture
def stub(secured: RunningServer) -> Iterator[sarah_pb2_grpc.SarahServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        yield sarah_pb2_grpc.SarahServiceStub(channel)


def _bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _seed(stub: sarah_pb2_grpc.SarahServiceStub) -> None:
    for workspace, score in (("toko", 40), ("other", 90)):
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, workspace_id=workspace,
                                               lead_score=score),
                         metadata=_bearer(ADMIN_KEY), timeout=10)


def test_missing_or_unknown_key_is_unauthenticated(stub) -> None:
    request = pb.GetStateRequest(contact_phone=PHONE, workspace_id="toko")
    for metadata in ((), _bearer("wrong"), (("authorization", "Basic eDp5"),),
                     (("x-api-key", ""),)):
        assert _code(lambda m=metadata: stub.GetState(request, metadata=m, timeout=10)) == \
            grpc.StatusCode.UNAUTHENTICATED


def test_bearer_and_x_api_key_are_both_accepted(stub) -> None:
    request = pb.GetStateRequest(contact_phone=PHONE, workspace_id="toko")
    assert stub.GetState(request, metadata=_bearer(TOKO_KEY), timeout=10).contact_phone == PHONE
    assert stub.GetState(request, metadata=(("x-api-key", TOKO_KEY),), timeout=10).etag == ""


def test_bound_key_never_reaches_another_workspace(stub) -> None:
    _seed(stub)
    toko = _bearer(TOKO_KEY)
    calls = [
        lambda: stub.GetState(pb.GetStateRequest(contact_phone=PHONE, workspace_id="other"),
                              metadata=toko, timeout=10),
        lambda: stub.GetState(pb.GetStateRequest(contact_phone=PHONE), metadata=toko,
                              timeout=10),  # "" is the default workspace, not toko's
        lambda: stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, workspace_id="other",
                                                       lead_score=1), metadata=toko, timeout=10),
        lambda: stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE, workspace_id="other"),
                                 metadata=toko, timeout=10),
        lambda: stub.ListLeads(pb.ListLeadsRequest(workspace_id="other"), metadata=toko,
                               timeout=10),
        lambda: stub.GetStats(pb.GetStatsRequest(workspace_id="other"), metadata=toko,
                              timeout=10),
        lambda: stub.ListEvents(pb.ListEventsRequest(contact_phone=PHONE, workspace_id="other"),
                                metadata=toko, timeout=10),
        lambda: stub.ListEvents(pb.ListEventsRequest(contact_phone=PHONE), metadata=toko,
                                timeout=10),  # the default workspace, as for GetState
        lambda: stub.GetActivity(pb.GetActivityRequest(workspace_id="other"), metadata=toko,
                                 timeout=10),
        # A stream's refusal arrives with its first read.
        lambda: next(stub.WatchLeads(pb.WatchLeadsRequest(workspace_id="other"), metadata=toko,
                                     timeout=10)),
        lambda: next(stub.WatchLeads(pb.WatchLeadsRequest(workspace_id=""), metadata=toko,
                                     timeout=10)),  # the default workspace
    ]
    assert [_code(call) for call in calls] == [grpc.StatusCode.PERMISSION_DENIED] * len(calls)
    other = stub.GetState(pb.GetStateRequest(contact_phone=PHONE, workspace_id="other"),
                          metadata=_bearer(ADMIN_KEY), timeout=10)
    assert other.lead_score == 90  # the refused upsert wrote nothing


def test_bound_key_scopes_bsuid_leads_like_phone_leads(stub) -> None:
    bsuid = "ID.1648738043044942"
    for workspace in ("toko", "other"):
        stub.UpsertState(pb.UpsertStateRequest(business_scoped_user_id=bsuid, lead_score=7,
                                               workspace_id=workspace),
                         metadata=_bearer(ADMIN_KEY), timeout=10)
    toko = _bearer(TOKO_KEY)
    mine = stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid, workspace_id="toko"),
                         metadata=toko, timeout=10)
    assert (mine.workspace_id, mine.lead_score) == ("toko", 7)
    for call in (
        lambda: stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid,
                                                 workspace_id="other"), metadata=toko, timeout=10),
        lambda: stub.UpsertState(pb.UpsertStateRequest(business_scoped_user_id=bsuid,
                                                       workspace_id="other"),
                                 metadata=toko, timeout=10),
        lambda: stub.DeleteState(pb.DeleteStateRequest(business_scoped_user_id=bsuid,
                                                       workspace_id="other"),
                                 metadata=toko, timeout=10),
        lambda: stub.ChangeIdentity(pb.ChangeIdentityRequest(
            business_scoped_user_id=bsuid, new_contact_phone=PHONE, workspace_id="other"),
            metadata=toko, timeout=10),
    ):
        assert _code(call) == grpc.StatusCode.PERMISSION_DENIED
    moved = stub.ChangeIdentity(pb.ChangeIdentityRequest(
        business_scoped_user_id=bsuid, new_contact_phone=PHONE, workspace_id="toko"),
        metadata=toko, timeout=10)
    assert (moved.workspace_id, moved.contact_phone) == ("toko", PHONE)
    other = stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid, workspace_id="other"),
                          metadata=_bearer(ADMIN_KEY), timeout=10)
    assert (other.lead_score, other.contact_phone) == (7, "")


def test_list_and_stats_without_workspace_mean_my_workspace(stub) -> None:
    _seed(stub)
    toko = _bearer(TOKO_KEY)
    leads = stub.ListLeads(pb.ListLeadsRequest(), metadata=toko, timeout=10).leads
    assert [(c.workspace_id, c.lead_score) for c in leads] == [("toko", 40)]
    assert stub.GetStats(pb.GetStatsRequest(), metadata=toko, timeout=10).total == 1
    everything = stub.GetStats(pb.GetStatsRequest(), metadata=_bearer(ADMIN_KEY), timeout=10)
    assert everything.total == 2

    def new_leads(key: str) -> int:
        days = stub.GetActivity(pb.GetActivityRequest(days=2), metadata=_bearer(key),
                                timeout=10).days
        return sum(d.new_leads for d in days)

    assert (new_leads(TOKO_KEY), new_leads(ADMIN_KEY)) == (1, 2)
    history = stub.ListEvents(pb.ListEventsRequest(contact_phone=PHONE, workspace_id="toko"),
                              metadata=toko, timeout=10).events
    assert [e.conversation.lead_score for e in history] == [40]


def test_a_bound_keys_watch_without_workspace_sees_only_its_own(stub) -> None:
    admin, toko = _bearer(ADMIN_KEY), _bearer(TOKO_KEY)
    head = stub.GetStats(pb.GetStatsRequest(), metadata=admin, timeout=10).revision
    stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=head), metadata=toko,
                             timeout=30)
    try:
        _seed(stub)  # "toko" first, then "other"
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=OTHER_PHONE, workspace_id="other"),
                         metadata=admin, timeout=10)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=OTHER_PHONE, workspace_id="toko"),
                         metadata=admin, timeout=10)
        seen = []
        for event in stream:
            if event.kind != pb.heartbeat:
                seen.append((event.revision, event.conversation.workspace_id,
                             event.conversation.contact_phone))
            if len(seen) == 2:
                break
    finally:
        stream.cancel()
    # The writes to "other" (head+2, head+3) were never sent to toko's watcher.
    assert seen == [(head + 1, "toko", PHONE), (head + 4, "toko", OTHER_PHONE)]


def test_import_needs_a_key_for_every_workspace(secured: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        admin = sarah_pb2_grpc.SarahAdminServiceStub(channel)
        request = pb.ImportConversationsRequest()
        assert _code(lambda: admin.ImportConversations(
            request, metadata=_bearer(TOKO_KEY), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        admin.ImportConversations(request, metadata=_bearer(ADMIN_KEY), timeout=10)


def test_health_stays_open_and_reflection_needs_a_key(secured: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = [reflection_pb2.ServerReflectionRequest(list_services="")]

        def list_services(metadata: tuple[tuple[str, str], ...]
                          ) -> list[reflection_pb2.ServerReflectionResponse]:
            return list(reflection.ServerReflectionInfo(iter(ask), metadata=metadata,
                                                        timeout=10))

        assert _code(lambda: list_services(())) == grpc.StatusCode.UNAUTHENTICATED
        assert list_services(_bearer(TOKO_KEY))[0].list_services_response.service


def test_reflection_is_open_when_configured(database_url: str, keys_file: Path) -> None:
    server = create_server(Config(listen="127.0.0.1:0", database_url=database_url,
                                  api_keys_file=str(keys_file), open_reflection=True,
                                  workers=1, metrics_listen=""))
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "grpcurl"), "-plaintext",
                               f"127.0.0.1:{server.port}", "list"],
                              capture_output=True, text=True, timeout=30)
        assert "sarah.v1.SarahService" in done.stdout, done.stderr
    finally:
        server.shutdown(grace=None)


def _refused_watch(port: int, query: str, headers: dict[str, str]) -> tuple[int, dict]:
    """GET /sarah/watch expected to be refused: its status and JSON error. A stream that
    opens instead fails here at once, rather than being read until it ends (never)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/sarah/watch" + query, headers=headers)
        response = conn.getresponse()
        assert response.status != 200, "the key was let watch the workspace"
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_keys_through_envoy_give_401_and_403_as_json(secured: RunningServer, tmp_path) -> None:
    envoy = EnvoyProcess(secured.port, tmp_path)
    try:
        path = f"/sarah/state?contact_phone={PHONE}&workspace_id=toko"
        status, _, error = envoy.call("GET", path)
        assert (status, error["code"]) == (401, 16) and "API key" in error["message"]
        status, _, lead = envoy.call("GET", path, headers={"x-api-key": TOKO_KEY})
        assert status == 200 and lead["workspace_id"] == "toko"
        status, _, error = envoy.call("GET", path.replace("toko", "other"),
                                      headers={"authorization": f"Bearer {TOKO_KEY}"})
        assert (status, error["code"]) == (403, 7)
        # The live stream is held to the key's workspace like every other route.
        status, error = _refused_watch(envoy.port, "?workspace_id=other", {"x-api-key": TOKO_KEY})
        assert (status, error["code"]) == (403, 7) and "'other'" in error["message"]
        assert _refused_watch(envoy.port, "?workspace_id=toko", {})[1]["code"] == 16
    finally:
        envoy.stop()


def test_sighup_reloads_keys_without_dropping_calls(database_url: str, tmp_path: Path) -> None:
    keys = _write_keys(tmp_path / "keys.txt", f"{ADMIN_KEY} *")
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url,
                         env={"SARAH_API_KEYS_FILE": str(keys)})
    failures: list[grpc.StatusCode] = []
    stop = threading.Event()

    def steady_caller() -> None:
        with grpc.insecure_channel(proc.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            while not stop.is_set():
                code = _code(lambda: stub.GetStats(pb.GetStatsRequest(),
                                                   metadata=_bearer(ADMIN_KEY), timeout=10))
                if code != grpc.StatusCode.OK:
                    failures.append(code)

    caller = threading.Thread(target=steady_caller)
    caller.start()
    try:
        with grpc.insecure_channel(proc.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)

            def new_key_code() -> grpc.StatusCode:
                return _code(lambda: stub.GetStats(pb.GetStatsRequest(),
                                                   metadata=_bearer("new-key"), timeout=10))

            assert new_key_code() == grpc.StatusCode.UNAUTHENTICATED
            _write_keys(keys, f"{ADMIN_KEY} *", f"{hash_key('new-key')} * rotated")
            proc.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: new_key_code() == grpc.StatusCode.OK, 10,
                       "the new key to be loaded")
    finally:
        stop.set()
        caller.join()
        log = proc.stop()
    assert failures == []
    assert "reloaded 2 API keys" in log
    assert ADMIN_KEY not in log and "new-key" not in log  # keys are never logged


def test_without_keys_the_server_keeps_to_loopback(database_url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "server", "--listen", "0.0.0.0:0",
                           "--database-url", database_url], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0:0" in done.stderr and "Traceback" not in done.stderr
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url)
    log = proc.stop()
    assert "no API keys configured" in log and "loopback only" in log


def test_insecure_flag_or_keys_allow_other_addresses(database_url: str, keys_file: Path) -> None:
    for extra in (["--insecure"], ["--api-keys-file", str(keys_file)]):
        proc = ServerProcess("--listen", "0.0.0.0:0", "--database-url", database_url, *extra)
        assert "listening on 0.0.0.0:" in proc.stop()


def test_metrics_count_calls_latency_and_conversations(secured: RunningServer, stub) -> None:
    _seed(stub)
    assert _code(lambda: stub.GetState(pb.GetStateRequest(contact_phone="08123",
                                                          workspace_id="toko"),
                                       metadata=_bearer(TOKO_KEY), timeout=10)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    url = f"http://127.0.0.1:{secured.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert ('sarah_calls_total{code="OK",method="/sarah.v1.SarahService/UpsertState"} 2.0'
            in text)
    assert ('sarah_calls_total{code="INVALID_ARGUMENT",method="/sarah.v1.SarahService/GetState"}'
            ' 1.0' in text)
    assert 'sarah_call_duration_seconds_bucket{le="+Inf",method="/sarah.v1.SarahService/' \
           'UpsertState"} 2.0' in text
    assert "sarah_conversations 2.0" in text


def test_json_log_lines_carry_envoys_request_id(database_url: str) -> None:
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url,
                         "--log-format", "json")
    with grpc.insecure_channel(proc.target) as channel:
        sarah_pb2_grpc.SarahServiceStub(channel).GetStats(
            pb.GetStatsRequest(), metadata=(("x-request-id", "req-42"),), timeout=10)
    lines = [json.loads(line) for line in proc.stop().splitlines() if line.startswith("{")]
    call = next(line for line in lines if line.get("method", "").endswith("/GetStats"))
    assert (call["code"], call["request_id"], call["severity"]) == ("OK", "req-42", "INFO")
    assert isinstance(call["duration_ms"], float)


def test_draining_server_reports_not_serving_while_it_still_answers(database_url: str) -> None:
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url,
                         "--drain-seconds", "3")
    try:
        with grpc.insecure_channel(proc.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            stub.GetStats(pb.GetStatsRequest(), timeout=10)
            proc.proc.send_signal(signal.SIGTERM)
            time.sleep(1)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 0
        assert proc.proc.wait(timeout=20) == 0
    finally:
        proc.stop()  # reads the rest of its log and closes the pipe


def test_hash_key_prints_the_form_for_the_keys_file() -> None:
    done = subprocess.run([sys.executable, "-m", "server", "hash-key"], input="s3cret\n",
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == hash_key("s3cret")
    assert done.stdout.startswith("sha256:") and len(done.stdout.strip()) == 71


def test_bad_keys_file_fails_at_start_naming_the_line(database_url: str, tmp_path) -> None:
    bad = _write_keys(tmp_path / "bad.txt", f"{ADMIN_KEY} *", "lonely-key")
    done = subprocess.run([sys.executable, "-m", "server", "--listen", "127.0.0.1:0",
                           "--database-url", database_url, "--api-keys-file", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "line 3" in done.stderr and "Traceback" not in done.stderr
