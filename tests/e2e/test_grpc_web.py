"""gRPC-Web through the real Envoy (contract v1.2, "Browsers"): the TypeScript stubs of ts/gen
and Connect-ES's gRPC-Web transport, run by Node against a server that requires API keys --
every RPC, WatchLeads with resume, errors with their BadRequest details, the key as
metadata, ts/example.ts as the README runs it -- and, sent from Python, each gRPC-Web content
type and a call over the JSON routes' 1 MiB."""

import base64
import http.client
import json
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from deploy import ROOT
from harness.envoy import EnvoyProcess
from sarah.v1 import sarah_pb2 as pb
from tests.support.docs import docs_blocks
from tests.support.servers import serving
from tests.support.workerd import NODE

ADMIN_KEY = "sk_admin-7d2e"
# One key and workspace a scenario, so that their counts never meet.
SCENARIOS = ("unary", "watch", "errors", "example", "readme")
_KEYS = {scenario: f"sk_{scenario}-41c9" for scenario in SCENARIOS}
_NODE_SECONDS = 30


@dataclass
class Edge:
    url: str  # Envoy's
    port: int

    def node(self, scenario: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Node running `argv` with the scenario's key and workspace, and the admin key."""
        env = {"PATH": "/usr/bin:/bin", "SARAH_URL": self.url,
               "SARAH_API_KEY": _KEYS[scenario], "SARAH_WORKSPACE_ID": scenario,
               "SARAH_ADMIN_KEY": ADMIN_KEY}
        done = subprocess.run([str(NODE), *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=_NODE_SECONDS)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def scenario(self, name: str) -> dict[str, object]:
        """ts/test/grpc_web.ts's scenario `name`: the JSON it prints last."""
        answer: dict[str, object] = json.loads(
            self.node(name, "ts/test/grpc_web.ts", name).stdout.splitlines()[-1])
        return answer


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    assert NODE.exists(), f"{NODE} is missing: run make .venv/.installed"
    workdir = tmp_path_factory.mktemp("grpc-web")
    keys = workdir / "api-keys.txt"
    keys.write_text("".join(f"{key} {scenario}\n" for scenario, key in _KEYS.items())
                    + f"{ADMIN_KEY} * operations\n")
    with serving(f"sqlite:///{workdir / 'sarah.db'}", api_keys_file=str(keys)) as server:
        envoy = EnvoyProcess(server.port, workdir)
        try:
            envoy.wait_healthy(1)
            yield Edge(f"http://127.0.0.1:{envoy.port}", envoy.port)
        finally:
            envoy.stop()


def _unary_methods() -> set[str]:
    return {f"{service.full_name}/{method.name}"
            for service in pb.DESCRIPTOR.services_by_name.values()
            for method in service.methods
            if not method.client_streaming and not method.server_streaming}


def test_every_unary_rpc_works_over_grpc_web_from_typescript(edge: Edge) -> None:
    called = edge.scenario("unary")["called"]
    assert set(called) == _unary_methods()  # type: ignore[arg-type]


def test_watch_leads_streams_and_resumes_from_a_revision(edge: Edge) -> None:
    watched = edge.scenario("watch")
    revisions = [int(r) for r in watched["revisions"]]  # type: ignore[attr-defined]
    assert len(revisions) == 3 and revisions == sorted(set(revisions))
    assert watched["resumed"] == watched["revisions"][1:]  # type: ignore[index]


def test_errors_arrive_with_their_bad_request_details_decoded(edge: Edge) -> None:
    errors = edge.scenario("errors")
    assert errors["fields"] == ["contact_phone", "lead_score"], errors
    assert "lead_score: must be from 0 to 100, got 140" in str(errors["message"])
    assert errors["codes"] == {"unauthenticated": "Unauthenticated",
                               "unknownKey": "Unauthenticated",
                               "otherWorkspace": "PermissionDenied",
                               "refusedWatch": "Unauthenticated"}


def test_the_typescript_example_reads_writes_and_sees_its_write_on_the_watch(edge: Edge
                                                                          ) -> None:
    printed = edge.node("example", "ts/example.ts").stdout.splitlines()
    assert printed[:2] == ["before: state=greeting score=0 messages=0",
                           "after: state=qualifying score=45 messages=1"], printed
    assert re.fullmatch(r"event: revision=\d+ upserted \+6281234567890 changed=\S*state\S*",
                        printed[2]), printed


def test_the_readme_runs_the_example_as_written(edge: Edge) -> None:
    [block] = docs_blocks("README.md", "From a browser, or TypeScript", "sh")
    [line] = [line for line in block.splitlines() if "ts/example.ts" in line]
    command = line.split(" #", 1)[0].replace("http://127.0.0.1:8080", edge.url)
    assignment, node, script = command.split()
    assert (assignment.split("=")[0], node) == ("SARAH_URL", ".venv/bin/node"), command
    # make run is keyless; this server wants the scenario's key.
    env = {"PATH": "/usr/bin:/bin", "SARAH_API_KEY": _KEYS["readme"],
           "SARAH_WORKSPACE_ID": "readme", "SARAH_URL": assignment.split("=", 1)[1]}
    done = subprocess.run([str(Path(sys.executable).parent / "node"), script], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=_NODE_SECONDS)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["before", "after",
                                                                         "event"]
    [excerpt] = docs_blocks("README.md", "From a browser, or TypeScript", "ts")
    example = (ROOT / "ts" / "example.ts").read_text()
    missing = [line for line in excerpt.splitlines() if line.strip() not in example]
    assert not missing, f"the README's excerpt of ts/example.ts differs from it: {missing}"


def _grpc_web(port: int, path: str, message: bytes, content_type: str,
              key: str) -> tuple[int, dict[str, str], bytes, str]:
    """One gRPC-Web call over HTTP/1.1, answered in the same content type: the status, the
    headers, the reply message and the trailers."""
    body = b"\0" + struct.pack(">I", len(message)) + message
    text = content_type.startswith("application/grpc-web-text")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, base64.b64encode(body) if text else body,
                     {"content-type": content_type, "accept": content_type, "x-grpc-web": "1",
                      "x-api-key": key})
        response = conn.getresponse()
        raw = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
    finally:
        conn.close()
    if text:  # base64 chunks, each padded: decoded 4 characters at a time
        raw = b"".join(base64.b64decode(raw[i:i + 4]) for i in range(0, len(raw), 4))
    data, trailers = b"", ""
    while raw:  # frames: a flags byte (0x80: the trailers), a length, the payload
        flags, length = struct.unpack(">BI", raw[:5])
        if flags & 0x80:
            trailers += raw[5:5 + length].decode()
        else:
            data += raw[5:5 + length]
        raw = raw[5 + length:]
    return response.status, headers, data, trailers


@pytest.mark.parametrize("content_type", ["application/grpc-web", "application/grpc-web+proto",
                                          "application/grpc-web-text"])
def test_each_grpc_web_content_type_reaches_the_server(edge: Edge, content_type: str) -> None:
    request = pb.UpsertStateRequest(contact_phone="+6281277770000", workspace_id="unary",
                                    add_messages=1)
    status, headers, data, trailers = _grpc_web(
        edge.port, "/sarah.v1.SarahService/UpsertState", request.SerializeToString(),
        content_type, _KEYS["unary"])
    assert status == 200 and "grpc-status:0" in trailers, (headers, trailers)
    assert headers["content-type"].startswith(content_type), headers
    assert pb.Conversation.FromString(data).contact_phone == "+6281277770000"


def test_a_grpc_web_call_over_1_mib_is_not_held_to_the_json_limit(edge: Edge) -> None:
    """The buffer filter's 1 MiB and the JSON-only 415 are the JSON routes'; a gRPC-Web call
    is gRPC, as large as the server takes (grpc's 4 MiB)."""
    exported = Timestamp(seconds=1735787045)
    conversations = [
        pb.Conversation(contact_phone=f"+628128888{i:04d}", workspace_id="unary",
                        created_at=exported, updated_at=exported,
                        extracted_data=pb.ExtractedData(pain_points=["x" * 4096] * 20))
        for i in range(14)]
    message = pb.ImportConversationsRequest(conversations=conversations).SerializeToString()
    assert len(message) > 1 << 20
    status, headers, data, trailers = _grpc_web(
        edge.port, "/sarah.v1.SarahAdminService/ImportConversations", message,
        "application/grpc-web+proto", ADMIN_KEY)
    assert status == 200 and "grpc-status:0" in trailers, (headers, trailers)
    results = pb.ImportConversationsResponse.FromString(data).results
    assert [r.outcome for r in results] == [pb.imported] * 14, results
