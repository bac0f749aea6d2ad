"""Overload: calls beyond the server's threads and its queue are refused at once with
UNAVAILABLE and retry advice, instead of waiting until their deadlines; the admitted ones
finish."""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import write_lock
from tests.support.servers import serving

THREADS, QUEUED, SENT = 2, 2, 8


def _phone(i: int) -> str:
    return f"+62812000{i:05d}"


def test_calls_beyond_threads_and_queue_are_refused_and_admitted_ones_succeed(
        database_url: str) -> None:
    with serving(database_url, threads=THREADS, max_queued_calls=QUEUED) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        with write_lock(database_url) as lock:
            # The held lock keeps every admitted write running (or waiting for a thread).
            calls = [stub.UpsertState.future(
                pb.UpsertStateRequest(contact_phone=_phone(i), lead_score=i), timeout=60)
                for i in range(SENT)]
            excess = SENT - THREADS - QUEUED
            wait_until(lambda: sum(c.done() for c in calls) >= excess, 30,
                       "the calls beyond the threads and the queue to be refused")
            refused = [c for c in calls if c.done()]
            # Refused while the admitted calls still wait: not queued behind them.
            assert len(refused) == excess
            for call in refused:
                assert call.code() == grpc.StatusCode.UNAVAILABLE, call.details()
                assert "at capacity" in call.details() and "retry after" in call.details()
                advice = dict(call.trailing_metadata() or ())
                assert advice["retry-after"] == "1"
                assert advice["grpc-retry-pushback-ms"] == "1000"
            # A health check is never refused: a busy server stays in Envoy's cluster.
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
                health_pb2.HealthCheckResponse.SERVING
            lock.release()
        admitted = [c for c in calls if c not in refused]
        assert [c.result().lead_score for c in admitted] == [
            int(c.result().contact_phone[-5:]) for c in admitted]
        # Room again: the next call is served.
        read = stub.GetState(pb.GetStateRequest(contact_phone=admitted[0].result().contact_phone),
                             timeout=30)
        assert read.lead_score == admitted[0].result().lead_score
