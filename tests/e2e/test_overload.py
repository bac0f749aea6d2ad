"""Overload through Envoy: a JSON caller beyond what the servers run and queue gets a JSON
503 with retry-after at once, from the server's own bound or, before it, from Envoy's
circuit breaker, while the admitted calls go on and succeed."""

import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from deploy.envoy_config import Config, with_call_limit
from harness.envoy import EnvoyProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import write_lock
from tests.support.servers import serving

SENT = 8
_Reply = tuple[int, dict[str, str], object]


def _flood(tmp_path: Path, admitted: int, settings: dict[str, int],
           derive: Callable[[Config], Config] | None = None) -> tuple[dict[int, _Reply],
                                                                      dict[int, _Reply]]:
    """SENT JSON upserts at once while the write lock is held, so the admitted ones stay
    running: (the replies that came back meanwhile, all replies)."""
    url = f"sqlite:///{tmp_path / 'sarah.db'}"
    replies: dict[int, _Reply] = {}
    with serving(url, **settings) as server:
        envoy = EnvoyProcess(server.port, tmp_path, derive=derive)
        try:
            envoy.wait_healthy(1)

            def post(i: int) -> None:
                body = {"contact_phone": f"+62812000{i:05d}", "lead_score": i}
                replies[i] = envoy.call("POST", "/sarah/state", body)

            callers = [threading.Thread(target=post, args=(i,)) for i in range(SENT)]
            with write_lock(url) as lock:
                for caller in callers:
                    caller.start()
                wait_until(lambda: len(replies) >= SENT - admitted, 30,
                           "the calls beyond capacity to be refused")
                early = dict(replies)
                if derive is not None:  # a gRPC caller, refused by Envoy as well
                    with grpc.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
                        stub = sarah_pb2_grpc.SarahServiceStub(channel)
                        try:
                            stub.GetStats(pb.GetStatsRequest(), timeout=30)
                        except grpc.RpcError as exc:
                            refused: grpc.Call = exc  # type: ignore[assignment]
                            assert refused.code() == grpc.StatusCode.UNAVAILABLE
                            advice = dict(refused.initial_metadata() or ())
                            advice.update(dict(refused.trailing_metadata() or ()))
                            assert advice.get("grpc-retry-pushback-ms") == "1000", advice
                        else:
                            raise AssertionError("a call beyond the breaker was let through")
                lock.release()
            for caller in callers:
                caller.join()
        finally:
            envoy.stop()
    return early, replies


def _check(early: dict[int, _Reply], replies: dict[int, _Reply], admitted: int) -> None:
    # Answered while the admitted calls still waited: refused, not queued behind them.
    assert len(early) == SENT - admitted
    for status, headers, error in early.values():
        assert status == 503 and headers["content-type"].startswith("application/json")
        assert isinstance(error, dict) and error["code"] == 14, error
        assert "at capacity" in error["message"], error
        assert headers["retry-after"] == "1", headers
    served = {i: reply for i, reply in replies.items() if i not in early}
    assert len(served) == admitted
    for i, (status, _, lead) in served.items():
        assert status == 200 and isinstance(lead, dict) and lead["lead_score"] == i, lead


def test_calls_beyond_the_servers_threads_and_queue_get_503_with_retry_after(
        tmp_path: Path) -> None:
    early, replies = _flood(tmp_path, admitted=4, settings={"threads": 2, "max_queued_calls": 2})
    _check(early, replies, admitted=4)


def test_envoys_circuit_breaker_refuses_beyond_its_limit_with_retry_after(
        tmp_path: Path) -> None:
    early, replies = _flood(tmp_path, admitted=2, settings={},
                            derive=lambda config: with_call_limit(config, 2))
    _check(early, replies, admitted=2)
    for _, headers, _ in early.values():
        assert headers.get("x-envoy-overloaded") == "true", headers
