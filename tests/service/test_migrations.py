"""Schema migrations on both databases, and copying a SQLite file's data into PostgreSQL."""

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import peewee
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from deploy import ROOT
from harness.postgres import fresh_postgres_database
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import create_server
from server.config import Config
from server.core.domain import Lead
from server.storage.database import is_sqlite, open_database
from server.storage.lead_json import lead_to_json
from server.storage.migrations import _CONVERSATIONS_AND_REQUEST_IDS, LATEST, _run, migrate
from server.storage.models import MODELS, bind_models
from tests.support.databases import is_postgres, new_database_url, open_at_schema, query
from tests.support.helpers import PHONE
from tests.support.servers import serving


@pytest.fixture
def empty_database_url(backend: str, tmp_path, request) -> str:
    return new_database_url(backend, tmp_path, request)


def _sarah_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _versions(url: str) -> list[tuple]:
    return query(url, "SELECT version FROM schema_migrations ORDER BY version")


def test_migrate_brings_an_empty_database_to_the_latest_schema(empty_database_url) -> None:
    done = _sarah_server("migrate", "--database-url", empty_database_url)
    assert done.returncode == 0, done.stderr
    assert f"schema at version {LATEST}" in done.stdout
    assert _versions(empty_database_url) == [(v,) for v in range(1, LATEST + 1)]
    again = _sarah_server("migrate", "--database-url", empty_database_url)
    assert "already current" in again.stdout


def test_replicas_migrating_at_once_apply_each_step_once(empty_database_url) -> None:
    def run(_: int) -> subprocess.CompletedProcess[str]:
        return _sarah_server("migrate", "--database-url", empty_database_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(4)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert _versions(empty_database_url) == [(v,) for v in range(1, LATEST + 1)]


def test_server_without_migrate_refuses_an_old_schema(empty_database_url) -> None:
    done = _sarah_server("--listen", "127.0.0.1:0", "--database-url", empty_database_url,
                         "--migrate", "false")
    assert done.returncode == 1
    assert "run `sarah-server migrate`" in done.stderr and "Traceback" not in done.stderr


def test_database_made_before_migrations_is_adopted_with_its_data(empty_database_url) -> None:
    db = open_database(empty_database_url)
    bind_models(db)
    with db.connection_context():
        # How the first version of the server made its schema (the DDL of migration 1,
        # peewee's of that day), without a record of any migration.
        _run(db, _CONVERSATIONS_AND_REQUEST_IDS)
        db.execute_sql(
            "INSERT INTO conversation (workspace_id, contact_phone, state, lead_score, "
            "lead_temperature, pain_points, language, message_count, created_at, updated_at, "
            f"last_message_at, etag) VALUES ('', '{PHONE}', 'handoff', 88, 'hot', '[]', "
            "'en', 9, 1, 2, 3, 'e')")
    db.close_all()
    running = create_server(Config(listen="127.0.0.1:0", database_url=empty_database_url,
                                   workers=1, metrics_listen=""))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            lead = stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=10)
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    finally:
        running.shutdown(grace=None)
    assert (lead.state, lead.lead_score, lead.message_count) == (pb.handoff, 88, 9)
    assert (stats.total, stats.hot, stats.by_state.handoff, stats.avg_score) == (1, 1, 1, 88)
    assert _versions(empty_database_url)[-1] == (LATEST,)


def test_a_database_of_schema_3_with_leads_migrates_and_serves_them_unchanged(
        empty_database_url) -> None:
    db = open_at_schema(empty_database_url, 3)
    with db.connection_context():
        db.execute_sql(
            "INSERT INTO conversation (workspace_id, contact_phone, state, lead_score, "
            "lead_temperature, name, pain_points, language, message_count, created_at, "
            f"updated_at, last_message_at, etag) VALUES ('toko', '{PHONE}', 'handoff', 88, "
            "'hot', 'Budi', '[\"ongkir\"]', 'en', 9, 1, 2, 3, 'e')")
        db.execute_sql(
            "INSERT INTO upsert_request (workspace_id, contact_phone, request_id, created_at, "
            "result) VALUES ('toko', %s, 'wamid.old', 9999999999999999, 'x')"
            .replace("%s", db.param), (PHONE,))
        db.execute_sql(
            "INSERT INTO lead_count (workspace_id, lead_temperature, state, n, score_sum) "
            "VALUES ('toko', 'hot', 'handoff', 1, 88)")
    db.close_all()
    assert _versions(empty_database_url)[-1] == (3,)
    running = create_server(Config(listen="127.0.0.1:0", database_url=empty_database_url,
                                   workers=1, metrics_listen=""))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            lead = stub.GetState(pb.GetStateRequest(contact_phone=PHONE, workspace_id="toko"),
                                 timeout=10)
            listed = stub.ListLeads(pb.ListLeadsRequest(), timeout=10).leads
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
            given = stub.UpsertState(pb.UpsertStateRequest(
                contact_phone=PHONE, workspace_id="toko",
                business_scoped_user_id="ID.1648738043044942"), timeout=10)
            by_bsuid = stub.GetState(pb.GetStateRequest(
                business_scoped_user_id="ID.1648738043044942", workspace_id="toko"), timeout=10)
            fresh = stub.UpsertState(pb.UpsertStateRequest(
                business_scoped_user_id="ID.2", workspace_id="toko"), timeout=10)
    finally:
        running.shutdown(grace=None)
    assert (lead.state, lead.lead_score, lead.message_count, lead.etag) == (pb.handoff, 88, 9, "e")
    assert (lead.extracted_data.name, list(lead.extracted_data.pain_points)) == (
        "Budi", ["ongkir"])
    assert (lead.business_scoped_user_id, lead.username, lead.parent_business_scoped_user_id) == (
        "", "", "")
    assert [c.contact_phone for c in listed] == [PHONE]
    assert (stats.total, stats.hot, stats.avg_score) == (1, 1, 88)
    assert given.business_scoped_user_id == by_bsuid.business_scoped_user_id
    assert by_bsuid.lead_score == 88 and fresh.contact_phone == ""
    assert _versions(empty_database_url)[-1] == (LATEST,)
    # The stored request record is still there, under the phone, with no BSUID.
    assert query(empty_database_url, "SELECT business_scoped_user_id FROM upsert_request "
                 "WHERE request_id = 'wamid.old'") == [("",)]


def _schema(url: str, tables: list[str] | None = None) -> dict[str, object]:
    """Each table's columns (in order) and indexes, as the database itself reports them."""
    db = open_database(url, pool_size=1)
    try:
        with db.connection_context():
            names = tables if tables is not None else db.get_tables()
            return {table: (
                [(c.name, _column_type(db, table, c.name, c.data_type), c.null, c.primary_key,
                  c.default) for c in db.get_columns(table)],
                sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table)),
            ) for table in sorted(names)}
    finally:
        db.close_all()


def _column_type(db: peewee.Database, table: str, column: str, data_type: str) -> str:
    """The column's type with the width that counts: PostgreSQL's enforced width (peewee
    reports its types without one); none on SQLite, which never enforces a VARCHAR's width
    and keeps the declared one of the day a column was made (migrations._PostgresOnly)."""
    if is_sqlite(db):
        return re.sub(r"\(\d+\)$", "", data_type)
    (width,), = db.execute_sql(
        "SELECT character_maximum_length FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
        (table, column)).fetchall()
    return data_type if width is None else f"{data_type}({width})"


def test_migrations_make_exactly_the_schema_the_models_describe(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    migrated_url = new_database_url(backend, tmp_path / "migrated", request)
    modelled_url = new_database_url(backend, tmp_path / "modelled", request)
    migrated = open_database(migrated_url, pool_size=1)
    migrate(migrated)
    migrated.close_all()
    modelled = open_database(modelled_url, pool_size=1)
    bind_models(modelled)
    with modelled.connection_context():
        modelled.create_tables(MODELS)
    modelled.close_all()
    tables = [model._meta.table_name for model in MODELS]
    migrated_schema = _schema(migrated_url)
    assert sorted(migrated_schema) == sorted([*tables, "schema_migrations"])
    assert _schema(migrated_url, tables) == _schema(modelled_url, tables)


def test_copy_data_moves_a_sqlite_file_into_postgresql(tmp_path, postgres_server_url) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    running = create_server(Config(listen="127.0.0.1:0", database_url=source, workers=1,
                                   metrics_listen=""))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            for i in range(2500):  # more than one batch
                stub.UpsertState(pb.UpsertStateRequest(
                    contact_phone=f"+62812000{i:05d}", lead_score=i % 101,
                    workspace_id="toko" if i % 2 else "", request_id=f"r{i}",
                    extracted_data=pb.ExtractedData(name=f"Budi {i}", pain_points=["ongkir"]),
                ), timeout=10)
    finally:
        running.shutdown(grace=None)
    target = fresh_postgres_database(postgres_server_url)
    assert is_postgres(target)
    columns = ("workspace_id, contact_phone, state, lead_score, lead_temperature, name, "
               "pain_points, message_count, created_at, updated_at, last_message_at, etag")
    rows = f"SELECT {columns} FROM conversation ORDER BY workspace_id, contact_phone"
    for _ in range(2):  # a second run changes nothing
        done = _sarah_server("copy-data", "--source", source, "--database-url", target)
        assert done.returncode == 0, done.stderr
        assert "copied 2500 conversations, 2500 request ids, 2500 events and " in done.stdout
        assert query(target, rows) == query(source, rows)
    assert query(target, "SELECT COUNT(*) FROM upsert_request") == [(2500,)]
    counts = "SELECT workspace_id, lead_temperature, state, n, score_sum FROM lead_count " \
             "ORDER BY 1, 2, 3"
    assert query(target, counts) == query(source, counts)


def _insert_lead(db: peewee.Database, workspace: str, phone: str, **values: object) -> None:
    row = {"state": "greeting", "lead_score": 0, "lead_temperature": "cold", "name": None,
           "pain_points": "[]", "language": "id", "message_count": 0, "created_at": 1,
           "updated_at": 1, "last_message_at": 1, "etag": "e", **values}
    columns = ["workspace_id", "contact_phone", *row]
    db.execute_sql(
        f"INSERT INTO conversation ({', '.join(columns)}) "
        f"VALUES ({', '.join([db.param] * len(columns))})", (workspace, phone, *row.values()))


def test_argentine_leads_of_v1_move_to_whatsapps_mobile_form(
        empty_database_url) -> None:
    """v1 stored "+54" + 10 digits; the phone rules now say "+549" + the same digits. A v1
    lead must still be found, and two v1 spellings of one number become one lead."""
    db = open_at_schema(empty_database_url, 4)
    with db.connection_context():
        # Only the old spelling: it moves.
        _insert_lead(db, "", "+541133334444", name="Ana", lead_score=70,
                     lead_temperature="hot", message_count=4)
        # Both spellings (v1 made two leads of them): one lead, "+549" kept.
        _insert_lead(db, "", "+542614567890", name="Luis", goals="más ventas",
                     pain_points='["envíos"]', message_count=3, created_at=1,
                     last_message_at=50)
        _insert_lead(db, "", "+5492614567890", lead_score=40, lead_temperature="warm",
                     message_count=2, created_at=10, updated_at=20, last_message_at=30)
        # A toll-free number has no mobile form; another country's number is not touched.
        _insert_lead(db, "", "+548001234567")
        _insert_lead(db, "", "+6281234567890")
        db.execute_sql(
            "INSERT INTO upsert_request (workspace_id, contact_phone, request_id, created_at, "
            f"result) VALUES ('', {db.param}, 'wamid.ar', 9999999999999999, 'x')",
            ("+541133334444",))
    db.close_all()
    running = create_server(Config(listen="127.0.0.1:0", database_url=empty_database_url,
                                   workers=1, metrics_listen=""))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            ana = stub.GetState(pb.GetStateRequest(contact_phone="541133334444"), timeout=10)
            luis = stub.GetState(pb.GetStateRequest(contact_phone="+542614567890"), timeout=10)
            phones = sorted(c.contact_phone for c in
                            stub.ListLeads(pb.ListLeadsRequest(), timeout=10).leads)
            stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    finally:
        running.shutdown(grace=None)
    assert (ana.contact_phone, ana.extracted_data.name, ana.lead_score, ana.message_count) == (
        "+5491133334444", "Ana", 70, 4)
    assert luis.contact_phone == "+5492614567890"
    assert (luis.lead_score, luis.lead_temperature) == (40, pb.warm)  # the "+549" row's
    assert (luis.extracted_data.name, luis.extracted_data.goals,
            list(luis.extracted_data.pain_points)) == ("Luis", "más ventas", ["envíos"])
    assert luis.message_count == 5
    assert (_micros(luis.created_at), _micros(luis.last_message_at)) == (1, 50)
    assert phones == ["+548001234567", "+5491133334444", "+5492614567890", "+6281234567890"]
    assert (stats.total, stats.hot, stats.warm, stats.cold) == (4, 1, 1, 2)
    assert query(empty_database_url, "SELECT contact_phone FROM upsert_request "
                 "WHERE request_id = 'wamid.ar'") == [("+5491133334444",)]


def _micros(stamp: Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000


def _insert_event(db: peewee.Database, revision: int, kind: str, phone: str, bsuid: str,
                  at: int) -> None:
    conversation = lead_to_json(Lead(workspace_id="", contact_phone=phone,
                                     business_scoped_user_id=bsuid, lead_score=revision))
    db.execute_sql(
        "INSERT INTO lead_event (revision, workspace_id, kind, contact_phone, "
        "business_scoped_user_id, conversation, changed, at) "
        f"VALUES ({', '.join([db.param] * 8)})",
        (revision, "", kind, phone, bsuid, conversation, "[]", at))


def test_a_schema_6_log_and_leads_get_their_history_by_lead_and_their_activity(
        empty_database_url) -> None:
    """Events logged before migration 7 go to the lead that holds their keys now (as
    identity.meant would choose it), and the stored leads are counted as activity."""
    db = open_at_schema(empty_database_url, 6)
    day_us, now = 86_400_000_000, time.time_ns() // 1000
    created, updated = now - 2 * day_us, now - day_us
    bsuid, other_bsuid, erased = "ID.1648738043044942", "ID.2", "+6281299990000"
    with db.connection_context():
        _insert_lead(db, "", PHONE, business_scoped_user_id=bsuid, state="handoff",
                     lead_temperature="hot", message_count=4, created_at=created,
                     updated_at=updated)
        _insert_lead(db, "", "+6281234567891", message_count=1, created_at=created,
                     updated_at=created)
        for revision, kind, phone, key in [
                (1, "upserted", PHONE, ""), (2, "upserted", "", bsuid), (3, "deleted", PHONE, ""),
                (4, "upserted", PHONE, bsuid), (5, "upserted", "+6281234567891", ""),
                (6, "deleted", erased, ""),
                (7, "upserted", PHONE, other_bsuid)]:  # another person's, when P was theirs
            _insert_event(db, revision, kind, phone, key, created + revision)
        db.execute_sql("UPDATE log_head SET revision = 7")
    db.close_all()
    with serving(empty_database_url) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)

        def history(**key: str) -> list[int]:
            return [e.revision for e in stub.ListEvents(pb.ListEventsRequest(**key),
                                                        timeout=10).events]

        by_lead = (history(contact_phone=PHONE), history(business_scoped_user_id=bsuid))
        others = (history(contact_phone="+6281234567891"), history(contact_phone=erased),
                  history(business_scoped_user_id=other_bsuid))
        days = stub.GetActivity(pb.GetActivityRequest(time_zone="UTC", days=5), timeout=10).days
        unheld = query(empty_database_url, "SELECT revision, lead_id FROM lead_event "
                       "WHERE revision IN (6, 7) ORDER BY revision")
        stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE), timeout=10)
        after_erasure = history(contact_phone=PHONE)
    assert by_lead == ([4, 3, 2, 1], [4, 3, 2, 1])
    assert others == ([5], [6], [7])
    assert unheld == [(6, 0), (7, 0)]
    assert [(sum(d.new_leads for d in days), sum(d.messages for d in days),
             sum(d.reached_handoff for d in days), sum(d.became_hot for d in days))] == [
        (2, 5, 1, 1)]
    assert query(empty_database_url,
                 "SELECT bucket, new_leads, messages, reached_handoff, became_hot "
                 "FROM activity ORDER BY bucket") == [
        (created // 900_000_000, 2, 5, 0, 0), (updated // 900_000_000, 0, 0, 1, 1)]
    # Erasure reaches the events by the lead's row and the unheld ones carrying its phone.
    assert len(after_erasure) == 1 and after_erasure[0] > 7
    assert query(empty_database_url, "SELECT revision FROM lead_event ORDER BY revision") == [
        (5,), (6,), (after_erasure[0],)]


def test_a_schema_7_database_keeps_its_activity_with_the_counts_in_the_bucket_index(
        empty_database_url) -> None:
    db = open_at_schema(empty_database_url, 7)
    now_bucket = time.time_ns() // 900_000_000_000
    with db.connection_context():
        for workspace, bucket, new_leads, messages in [("", now_bucket, 2, 5),
                                                       ("toko", now_bucket, 1, 3),
                                                       ("toko", now_bucket - 96, 4, 4)]:
            db.execute_sql(
                "INSERT INTO activity (workspace_id, bucket, new_leads, messages, "
                "reached_handoff, reached_completed, became_hot) "
                f"VALUES ({db.param}, {db.param}, {db.param}, {db.param}, 1, 0, 1)",
                (workspace, bucket, new_leads, messages))
    db.close_all()
    with serving(empty_database_url) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)

        def totals(**where: str) -> list[tuple[int, int, int, int]]:
            days = stub.GetActivity(pb.GetActivityRequest(time_zone="UTC", days=3, **where),
                                    timeout=10).days
            return [(d.new_leads, d.messages, d.reached_handoff, d.became_hot) for d in days]

        every, toko = totals(), totals(workspace_id="toko")
    assert _versions(empty_database_url)[-1] == (LATEST,)
    # The quarter-hour of 96 before now is yesterday's or the day before's (UTC).
    assert sum(every[:2], ()) in {(0, 0, 0, 0, 4, 4, 1, 1), (4, 4, 1, 1, 0, 0, 0, 0)}
    assert every[2] == (3, 8, 2, 2) and toko[2] == (1, 3, 1, 1)
    (_, indexes), = _schema(empty_database_url, ["activity"]).values()
    names = {name for name, _, _ in indexes}
    assert "activity_bucket" not in names
    # PostgreSQL keeps 63 characters of a name.
    assert [(name[:63], columns, unique) for name, columns, unique in indexes
            if columns[0] == "bucket"] == [
        ("activity_bucket_workspace_id_new_leads_messages_reached__a0136d6"[:63],
         ("bucket", "workspace_id", "new_leads", "messages", "reached_handoff",
          "reached_completed", "became_hot"), False)]


def test_a_schema_8_database_with_leads_takes_the_longest_bsuids_and_texts(
        empty_database_url) -> None:
    """Migration 9 widens every column holding a BSUID (on PostgreSQL; SQLite never enforced
    the width): after it, a lead stored before keeps its keys, and 128-character BSUIDs, a
    ".ENT." parent of 128 and 4,096-character texts are stored and read back intact."""
    old_bsuid = "ID.1648738043044942"
    bsuid, moved_to = "US." + "7" * 127 + "a", "BR." + "Z" * 128
    parent, business = "US.ENT." + "5" * 128, "toko kelontong " * 273 + "b"
    assert (len(bsuid), len(parent), len(business)) == (131, 135, 4096)
    db = open_at_schema(empty_database_url, 8)
    with db.connection_context():
        _insert_lead(db, "toko", PHONE, business_scoped_user_id=old_bsuid, name="Budi",
                     parent_business_scoped_user_id="ID.ENT.88123", message_count=3)
        _insert_lead(db, "toko", "+6281234567891", name="Sari")
    db.close_all()
    with serving(empty_database_url) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        kept = stub.GetState(pb.GetStateRequest(business_scoped_user_id=old_bsuid,
                                                workspace_id="toko"), timeout=10)
        write = pb.UpsertStateRequest(
            business_scoped_user_id=bsuid, parent_business_scoped_user_id=parent,
            workspace_id="toko", request_id="wamid.long", add_messages=1,
            extracted_data=pb.ExtractedData(business_type=business, goals=business,
                                            pain_points=[business]))
        stored = stub.UpsertState(write, timeout=10)
        retried = stub.UpsertState(write, timeout=10)
        read = stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid,
                                                workspace_id="toko"), timeout=10)
        events = stub.ListEvents(pb.ListEventsRequest(business_scoped_user_id=bsuid,
                                                      workspace_id="toko"), timeout=10).events
        moved = stub.ChangeIdentity(pb.ChangeIdentityRequest(
            contact_phone="+6281234567891", new_business_scoped_user_id=moved_to,
            workspace_id="toko"), timeout=10)
    assert (kept.contact_phone, kept.extracted_data.name, kept.message_count,
            kept.parent_business_scoped_user_id) == (PHONE, "Budi", 3, "ID.ENT.88123")
    assert retried == stored and read == stored and read.message_count == 1
    assert (read.business_scoped_user_id, read.parent_business_scoped_user_id) == (bsuid, parent)
    assert (read.extracted_data.business_type, read.extracted_data.goals,
            list(read.extracted_data.pain_points)) == (business, business, [business])
    assert [e.conversation.business_scoped_user_id for e in events] == [bsuid]
    assert (moved.extracted_data.name, moved.business_scoped_user_id) == ("Sari", moved_to)
    assert query(empty_database_url, "SELECT business_scoped_user_id, "
                 "parent_business_scoped_user_id, business_type FROM conversation "
                 f"WHERE business_scoped_user_id = '{bsuid}'") == [(bsuid, parent, business)]
    assert query(empty_database_url, "SELECT business_scoped_user_id FROM upsert_request "
                 "WHERE request_id = 'wamid.long'") == [(bsuid,)]
    assert query(empty_database_url, "SELECT DISTINCT business_scoped_user_id FROM lead_event "
                 f"WHERE business_scoped_user_id IN ('{bsuid}', '{moved_to}') ORDER BY 1") == [
        (moved_to,), (bsuid,)]
