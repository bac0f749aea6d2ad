"""Helpers shared by the tests: calls in one line, and the server as a child process."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
KAPSO_BODY = {
    "contact_phone": "+6281234567890", "state": "qualifying", "lead_score": 45,
    "lead_temperature": "warm",
    "extracted_data": {"name": "Budi", "business_type": "restaurant", "team_size": 5},
    "language": "id", "message_count": 3,
}
PHONE = "+6281234567890"


def upsert(stub: sarah_pb2_grpc.SarahServiceStub, **fields: object) -> pb.Conversation:
    """UpsertState with keyword fields; returns the stored conversation."""
    return stub.UpsertState(pb.UpsertStateRequest(**fields), timeout=10)


def get(stub: sarah_pb2_grpc.SarahServiceStub, phone: str, workspace: str = "") -> pb.Conversation:
    request = pb.GetStateRequest(contact_phone=phone, workspace_id=workspace)
    return stub.GetState(request, timeout=10)


class ServerProcess:
    """`python -m server` in a child process, as an operator runs it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            # Many servers run at once in the tests: each gets its own metrics port.
            cwd=ROOT, env={**os.environ, "SARAH_METRICS_LISTEN": "127.0.0.1:0", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()
        # Keep reading, or a busy server blocks once the pipe's buffer is full of log lines.
        self._reader = threading.Thread(target=self._read_rest, daemon=True)
        self._reader.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            if match:
                return int(match.group(1))
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> str:
        """Send `sig`, wait for exit, return everything it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return "".join(self.lines)


def bad_fields(err: grpc.RpcError) -> set[str]:
    """The field names of the google.rpc.BadRequest details of an INVALID_ARGUMENT error."""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status = rpc_status.from_call(err)
    assert status is not None, "INVALID_ARGUMENT without rich details"
    fields: set[str] = set()
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields |= {v.field for v in bad_request.field_violations}
    return fields
