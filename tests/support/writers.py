"""Writers that keep a service busy through a database failover, as callers do: each counts
messages of its own lead with request ids, retries a failed write with the same id until it
is acknowledged, and records how every call ended and how long its writes were refused."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from harness.http_calls import request
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc

OK, UNAVAILABLE, DEADLINE = "OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"
ALLOWED = (OK, UNAVAILABLE, DEADLINE)
_DEADLINE_S = 5.0  # each gRPC call's; an HTTP call has Envoy's 15 s route timeout
_RETRY_S = 0.1  # between the tries of one write: fine enough to measure an outage
_PACE_S = 0.02  # between two writes of one writer

# One write: (request_id) -> (how the call ended, the message_count it answered or None).
Send = Callable[[str], tuple[str, int | None]]


def http_sender(host_port: int, phone: str) -> Send:
    """POST /sarah/state through Envoy, as Kapso's save does."""
    def send(request_id: str) -> tuple[str, int | None]:
        try:
            status, headers, body = request("127.0.0.1", host_port, "POST", "/sarah/state", {
                "contact_phone": phone, "add_messages": 1, "request_id": request_id})
        except OSError as failed:
            return f"HTTP connection failed: {failed}", None
        code = body.get("code") if isinstance(body, dict) else None
        if status == 200 and isinstance(body, dict):
            return OK, int(body["message_count"])
        if status == 503 and code == 14 and headers.get("retry-after") == "1":
            return UNAVAILABLE, None
        if status == 504 and code == 4:
            return DEADLINE, None
        return f"HTTP {status} {headers.get('retry-after')=} {body}", None
    return send


def grpc_sender(target: str, phone: str) -> tuple[Send, grpc.Channel]:
    """UpsertState over gRPC to `target` (Envoy or a replica), gRPC's own retries off: each
    call's end is what it is."""
    channel = grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)])
    stub = sarah_pb2_grpc.SarahServiceStub(channel)

    def send(request_id: str) -> tuple[str, int | None]:
        try:
            lead = stub.UpsertState(pb.UpsertStateRequest(
                contact_phone=phone, add_messages=1, request_id=request_id), timeout=_DEADLINE_S)
        except grpc.RpcError as err:
            ended: grpc.Call = err  # type: ignore[assignment]
            name = ended.code().name
            return (name, None) if name in ALLOWED else (f"{name}: {ended.details()}", None)
        return OK, lead.message_count
    return send, channel


@dataclass
class Writer:
    """One caller: its lead's phone, how to send, and what happened."""

    name: str
    phone: str
    send: Send
    acknowledged: int = 0  # writes acknowledged, in order: the n-th answered message_count n
    ends: Counter[str] = field(default_factory=Counter)  # how calls ended
    wrong: list[str] = field(default_factory=list)  # calls that ended badly, or a wrong count
    retried: int = 0  # writes acknowledged only after a failed try
    longest_outage: float = 0.0  # since reset_outage: first failed try to acknowledgement

    def write_one(self, stopping: threading.Event) -> None:
        """The next write, tried until acknowledged (or `stopping` with none in flight)."""
        number = self.acknowledged + 1
        request_id = f"{self.name}-{number}"
        failed_at: float | None = None
        while True:
            started = time.monotonic()
            ended, count = self.send(request_id)
            self.ends[ended if ended in ALLOWED else "other"] += 1
            if ended not in ALLOWED:
                self.wrong.append(f"{request_id}: {ended}")
            if ended == OK:
                if count != number:
                    self.wrong.append(f"{request_id}: message_count {count}, not {number}")
                self.acknowledged = number
                if failed_at is not None:
                    self.retried += 1
                    self.longest_outage = max(self.longest_outage, time.monotonic() - failed_at)
                return
            failed_at = started if failed_at is None else failed_at
            if stopping.is_set() and time.monotonic() - failed_at > 120:
                self.wrong.append(f"{request_id}: never acknowledged")
                return
            time.sleep(_RETRY_S)


class Writers:
    """`writers` writing in threads of their own from now until stop(); pause() lets each
    finish the write it has in flight (retried until acknowledged) and hold, for a
    consistent count; resume() starts a new phase (outages measured afresh)."""

    def __init__(self, writers: list[Writer]):
        self.writers = writers
        self._stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._run, args=(w,), name=w.name, daemon=True)
                         for w in writers]
        for thread in self._threads:
            thread.start()

    def _run(self, writer: Writer) -> None:
        while not self._stopping.is_set():
            if not self._running.is_set():
                self._idle.release()
                self._running.wait()
                continue
            writer.write_one(self._stopping)
            time.sleep(_PACE_S)

    def pause(self) -> None:
        self._running.clear()
        for _ in self.writers:
            assert self._idle.acquire(timeout=180), "a writer never finished its write"

    def resume(self) -> None:
        for writer in self.writers:
            writer.longest_outage = 0.0
        self._running.set()

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        for thread in self._threads:
            thread.join(timeout=180)

    def acknowledged(self) -> int:
        return sum(writer.acknowledged for writer in self.writers)

    def longest_outage(self, kind: str = "") -> float:
        """The longest outage of the writers whose name starts with `kind` (all: "")."""
        return max((w.longest_outage for w in self.writers if w.name.startswith(kind)),
                   default=0.0)

    def wrong(self) -> list[str]:
        return [f"{writer.name}: {what}" for writer in self.writers for what in writer.wrong]
