"""make ha-test: the service through PostgreSQL failovers under load, nothing acknowledged
lost. etcd and three Patroni nodes on loopback run the Patroni config of docs/operations.md
("High availability") with Debian's packages; two replicas behind Envoy reach them through
a multi-host URL. 16 writers count messages with request ids (8 as JSON through Envoy, 4
over gRPC through Envoy, 4 over gRPC to a replica), a watcher streams each replica's
changes, and in turn: the primary node is lost (Patroni and postmaster SIGKILLed), a planned
switchover (patronictl), the lost node rejoins. After each, every acknowledged write is in
the database with its event and the right message_count, each watcher has every revision
once, in order, and no call ended but OK, UNAVAILABLE (HTTP 503 with retry-after) or at its
deadline. The longest write outage is printed, a figure, not an assertion (-s shows it)."""

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.cluster import Cluster
from harness.patroni import PatroniCluster
from harness.waiting import wait_until
from tests.support.docs import docs_blocks
from tests.support.watcher import RevisionWatcher
from tests.support.writers import Writer, Writers, grpc_sender, http_sender

SECTION = ("docs/operations.md", "High availability")
_RUN_ON_S = 3.0  # writes go on this long after the cluster settles, before the checks


def patroni_config() -> dict[str, object]:
    """The docs' Patroni config, as an operator copies it: the first YAML block."""
    config: dict[str, object] = yaml.safe_load(docs_blocks(*SECTION, "yaml")[0])
    return config


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    started = time.monotonic()
    cluster = PatroniCluster(patroni_config())
    print(f"\netcd and 3 Patroni nodes up in {time.monotonic() - started:.1f} s")
    yield cluster
    started = time.monotonic()
    cluster.stop()
    print(f"etcd and the Patroni nodes stopped in {time.monotonic() - started:.1f} s")


def _wait_for(watcher: RevisionWatcher, revision: int) -> None:
    wait_until(lambda: watcher.reached(revision), 30,
               f"{watcher.target}'s watcher to reach revision {revision}")


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description is not None else []


class Run:
    """The service, its callers and watchers on the Patroni cluster, and the checks."""

    def __init__(self, patroni: PatroniCluster, workdir: Path, password: str):
        self.patroni = patroni
        self.url = patroni.url("sarah", password, "sarah")
        self.admin = patroni.superuser_url("sarah")
        # Housekeeping every 2 s, so that its resumption shows within the test.
        self.service = Cluster(workdir, self.url, replicas=2,
                               args=("--housekeeping-seconds", "2"))
        self.watchers = [RevisionWatcher(f"127.0.0.1:{port}") for port in self.service.ports]
        self.channels: list[grpc.Channel] = []
        self.writers = Writers([self._writer(i) for i in range(16)])

    def _writer(self, i: int) -> Writer:
        """Writers 0-7 JSON through Envoy, 8-11 gRPC through Envoy, 12-15 gRPC to a replica."""
        phone = f"+62812400{i:05d}"
        if i < 8:
            return Writer(f"http-envoy-{i:02d}", phone, http_sender(self.service.envoy.port, phone))
        kind, target = (("grpc-envoy", f"127.0.0.1:{self.service.envoy.port}") if i < 12
                        else ("grpc-replica", f"127.0.0.1:{self.service.ports[i % 2]}"))
        send, channel = grpc_sender(target, phone)
        self.channels.append(channel)
        return Writer(f"{kind}-{i:02d}", phone, send)

    def check(self, phase: str, members: int) -> None:
        """Once the cluster settled: run on a little, hold the writers, compare, print."""
        self.patroni.wait_settled(members, timeout=120)
        time.sleep(_RUN_ON_S)
        self.writers.pause()
        wrong = self.writers.wrong()
        acknowledged = self.writers.acknowledged()
        lost, events, head = self._compare_database(wrong)
        for watcher in self.watchers:
            _wait_for(watcher, head)
            wrong.extend(watcher.problems(head))
        self._check_replicas(wrong)
        ends: Counter[str] = Counter()
        for writer in self.writers.writers:
            ends.update(writer.ends)
        by_kind = ", ".join(f"{kind} {self.writers.longest_outage(kind):.2f} s"
                            for kind in ("http-envoy", "grpc-envoy", "grpc-replica"))
        print(f"{phase}: longest write outage {self.writers.longest_outage():.2f} s "
              f"({by_kind}); so far: acknowledged writes {acknowledged}, lost {lost}, "
              f"events {events}, retried writes {sum(w.retried for w in self.writers.writers)}, "
              f"calls ended {dict(sorted(ends.items()))}; primary now {self.patroni.leader()}")
        assert wrong == [], "\n".join(wrong[:40])
        self.writers.resume()

    def _compare_database(self, wrong: list[str]) -> tuple[int, int, int]:
        """Each writer's lead, events and request ids against what it was acknowledged:
        (acknowledged writes missing, events of the writers' leads, the log's head)."""
        counts = dict(_sql(self.admin, "SELECT contact_phone, message_count FROM conversation"))
        events = dict(_sql(self.admin, "SELECT contact_phone, count(*) FROM lead_event "
                                       "GROUP BY contact_phone"))
        requests = dict(_sql(self.admin, "SELECT contact_phone, count(*) FROM upsert_request "
                                         "GROUP BY contact_phone"))
        lost = 0
        for w in self.writers.writers:
            stored = (int(str(counts.get(w.phone, 0))), int(str(events.get(w.phone, 0))),
                      int(str(requests.get(w.phone, 0))))
            lost += max(0, w.acknowledged - stored[0])
            if stored != (w.acknowledged,) * 3:
                wrong.append(f"{w.name}: {w.acknowledged} writes acknowledged; message_count "
                             f"{stored[0]}, {stored[1]} events, {stored[2]} request ids stored")
        [(head,)] = _sql(self.admin, "SELECT revision FROM log_head")
        total = sum(int(str(n)) for n in events.values())
        if int(str(head)) != total:
            wrong.append(f"the log's head is {head}, with {total} events")
        return lost, total, int(str(head))

    def _check_replicas(self, wrong: list[str]) -> None:
        """Both replicas SERVING and LISTENing on the primary of now."""
        listening = _sql(self.admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                     "'sarah' AND query LIKE 'LISTEN sarah_log%'")[0][0]
        if listening != len(self.service.ports):
            wrong.append(f"{listening} replicas LISTEN on the primary, not 2")
        for port in self.service.ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                wrong.append(f"127.0.0.1:{port} reports {status}, not SERVING")

    def logs(self) -> str:
        return "".join(replica.log for replica in self.service.replicas.values())

    def stop(self) -> None:
        self.writers.stop()
        for watcher in self.watchers:
            watcher.stop()
        for channel in self.channels:
            channel.close()
        self.service.stop()


def test_writes_survive_a_lost_primary_a_switchover_and_a_rejoin(
        patroni: PatroniCluster, tmp_path: Path) -> None:
    password = "sarah-" + patroni.superuser[1][:12]
    _sql(patroni.superuser_url(), f"CREATE ROLE sarah LOGIN PASSWORD '{password}'")
    _sql(patroni.superuser_url(), "CREATE DATABASE sarah OWNER sarah")
    started = time.monotonic()
    run = Run(patroni, tmp_path, password)
    try:
        run.check("start", members=3)

        lost = patroni.leader()
        assert lost is not None
        patroni.nodes[lost].lose()
        run.check(f"lost primary {lost}", members=2)
        for replica in run.service.replicas.values():
            for said in ("health is NOT_SERVING", "health is SERVING",
                         "listening for commits again", "housekeeping resumed"):
                assert said in replica.log, f"{replica.target} never said {said!r}"

        candidate = patroni.sync_standby()
        assert candidate is not None
        patroni.switchover(candidate)
        run.check(f"switchover to {candidate}", members=2)

        patroni.nodes[lost].start()
        run.check(f"{lost} rejoined", members=3)
        # It rewound what only it had (its last commits, never acknowledged) and followed.
        assert "running pg_rewind from" in patroni.nodes[lost].log()
    except BaseException as failed:
        failed.add_note(patroni.logs()[-20000:] + run.logs()[-20000:])
        raise
    finally:
        run.stop()
    assert "unexpected error" not in run.logs()
    print(f"whole run (service up to stopped) {time.monotonic() - started:.1f} s")
