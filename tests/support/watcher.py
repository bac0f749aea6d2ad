"""A watcher that records every revision a server streams to it, for the tests that check
delivery through a database outage or failover: every revision once, in order, no gap."""

import threading

import grpc

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc

# How a stream may end before the watcher stops it: the server went away or told the
# watcher to come back (UNAVAILABLE), which a client resumes from its last revision.
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE,)


class RevisionWatcher:
    """WatchLeads of every workspace on `target`, from revision 0, in a thread of its own.
    A stream that ends is opened again from the last revision received, as SarahClient's
    watch does, but repeats are recorded, not skipped: the server's promise is tested, not
    the client's filter."""

    def __init__(self, target: str):
        self.target = target
        self.revisions: list[int] = []
        self.streams = 0  # streams opened
        self.bad_endings: list[str] = []  # streams that ended in something not resumable
        self._stopping = threading.Event()
        self._call: grpc.RpcContext | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{target}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(target=self.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            while not self._stopping.is_set():
                since = self.revisions[-1] if self.revisions else 0
                call = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=since))
                self._call = call
                self.streams += 1
                try:
                    for event in call:
                        if event.kind != pb.heartbeat:
                            self.revisions.append(event.revision)
                except grpc.RpcError as err:
                    ended: grpc.Call = err  # type: ignore[assignment]
                    if not self._stopping.is_set() and ended.code() not in _RESUMABLE:
                        self.bad_endings.append(f"{ended.code()}: {ended.details()}")
                self._stopping.wait(0.2)

    def reached(self, revision: int) -> bool:
        return bool(self.revisions) and self.revisions[-1] >= revision

    def problems(self, head: int) -> list[str]:
        """What is wrong with the revisions received, if all of 1..head should be there:
        repeats, disorder, gaps, a stream that ended badly."""
        seen = list(self.revisions)
        found = [f"{self.target}: {ending}" for ending in self.bad_endings]
        repeats = len(seen) - len(set(seen))
        if repeats:
            found.append(f"{self.target}: {repeats} revisions received more than once")
        if seen != sorted(seen):
            found.append(f"{self.target}: revisions out of order")
        missing = sorted(set(range(1, head + 1)) - set(seen))
        if missing:
            found.append(f"{self.target}: {len(missing)} revisions never received, the first "
                         f"{missing[:10]}")
        return found

    def stop(self) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), f"the watcher of {self.target} did not stop"
