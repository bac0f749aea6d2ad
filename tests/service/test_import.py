"""Import from the earlier backend: the merge rules of ImportConversations, and `sarah import`
of a 10,000-line export with bad lines and duplicates, twice."""

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from client import SarahClient
from deploy import ROOT
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer
from tests.support.databases import query
from tests.support.helpers import PHONE

_T0 = 1_700_000_000_000  # milliseconds since the epoch, as the old backend wrote them
_HOUR = 3_600_000


def _ms(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.ToMilliseconds()


def _conversation(**fields: object) -> pb.Conversation:
    stamps = {key: fields.pop(key) for key in ("created_at", "updated_at", "last_message_at")
              if key in fields}
    conversation = pb.Conversation(**fields)
    for key, ms in stamps.items():
        getattr(conversation, key).FromMilliseconds(ms)
    return conversation


def _outcomes(client: SarahClient, *conversations: pb.Conversation) -> list[str]:
    response = client.import_conversations(conversations=list(conversations))
    return [pb.ImportOutcome.Name(r.outcome) for r in response.results]


@pytest.fixture
def client(running: RunningServer) -> Iterator[SarahClient]:
    with SarahClient(f"127.0.0.1:{running.port}") as sarah:
        yield sarah


def test_newer_wins_field_by_field_and_older_fills_the_gaps(client: SarahClient) -> None:
    older = _conversation(
        contact_phone="0812-3456-7890", state="qualifying", lead_score=40, lead_temperature="warm",
        extracted_data={"name": "Budi", "team_size": 5, "pain_points": ["no-shows"]},
        message_count=9, created_at=_T0, updated_at=_T0 + _HOUR, last_message_at=_T0 + 2 * _HOUR)
    newer = _conversation(
        contact_phone="6281234567890", state="handoff", lead_score=85, lead_temperature="hot",
        extracted_data={"goals": "more bookings"}, message_count=4,
        created_at=_T0 + _HOUR, updated_at=_T0 + 5 * _HOUR, last_message_at=_T0 + _HOUR)
    # In one call, the second sees what the first wrote.
    assert _outcomes(client, newer, older) == ["imported", "merged"]
    lead = client.get_state(contact_phone=PHONE)
    assert (lead.state, lead.lead_score, lead.lead_temperature) == (pb.handoff, 85, pb.hot)
    assert lead.extracted_data == pb.ExtractedData(
        name="Budi", team_size=5, pain_points=["no-shows"], goals="more bookings")
    assert (_ms(lead.created_at), _ms(lead.updated_at), _ms(lead.last_message_at)) == (
        _T0, _T0 + 5 * _HOUR, _T0 + 2 * _HOUR)
    assert lead.message_count == 9
    # Everything is now held: the same two again change nothing, etag included.
    assert _outcomes(client, older, newer) == ["unchanged", "unchanged"]
    assert client.get_state(contact_phone=PHONE).etag == lead.etag


def test_invalid_conversations_are_rejected_with_reasons_and_not_written(
    client: SarahClient,
) -> None:
    good = _conversation(contact_phone=PHONE, created_at=_T0, updated_at=_T0)
    response = client.import_conversations(conversations=[
        _conversation(contact_phone="08123", created_at=_T0, updated_at=_T0),
        _conversation(contact_phone="+6281200000001", lead_score=150, workspace_id="no space"),
        good,
    ])
    first, second, third = response.results
    assert (first.outcome, first.contact_phone) == (pb.rejected, "08123")
    assert "contact_phone: '08123' is not a valid phone number" in first.reason
    assert second.outcome == pb.rejected
    for field in ("lead_score", "workspace_id", "created_at", "updated_at"):
        assert f"{field}: " in second.reason
    assert (third.outcome, third.contact_phone, third.reason) == (pb.imported, PHONE, "")
    assert client.get_stats().total == 1


def test_more_than_500_per_call_is_invalid_argument(client: SarahClient) -> None:
    conversation = _conversation(contact_phone=PHONE, created_at=_T0, updated_at=_T0)
    with pytest.raises(grpc.RpcError) as caught:
        client.import_conversations(conversations=[conversation] * 501)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.get_stats().total == 0


# --- `sarah import` of a generated export ------------------------------------------------

_UNIQUE, _NEWER_DUPLICATES, _SAME_DUPLICATES = 9_000, 400, 200
_BAD = {"json": 150, "phone": 150, "score": 100}
_REASONS = {
    "json": "not valid JSON",
    "phone": "contact_phone: '08123' is not a valid phone number",
    "score": "lead_score: must be from 0 to 100, got 150",
}


def _phone(i: int) -> str:
    return f"+62812{i:08d}"


def _spelling(i: int) -> str:
    """Another way to write lead i's number, as people and WhatsApp do."""
    digits = f"{i:08d}"
    spellings = (f"0812-{digits[:4]}-{digits[4:]}", f"62812{digits}",
                 f"+62 812 {digits[:4]} {digits[4:]}")
    return spellings[i % 3]


def _document(i: int, **changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "_id": f"k{i:06x}", "_creationTime": _T0 + i + 0.5,
        "contact_phone": _phone(i), "state": "qualifying", "lead_score": i % 101,
        "lead_temperature": ("cold", "warm", "hot")[i % 3],
        "extracted_data": {"name": f"Lead {i}", "team_size": None if i % 4 else i % 50},
        "language": "id", "message_count": 3,
        "created_at": _T0 + i * 1000, "updated_at": _T0 + i * 1000 + _HOUR,
        "last_message_at": _T0 + i * 1000 + _HOUR,
    }
    doc.update(changes)
    return doc


def _write_export(path: Path) -> dict[int, str]:
    """Write the export; return the expected rejections by line number."""
    rng = random.Random(4)
    lines = [json.dumps(_document(i)) for i in range(_UNIQUE)]
    bad_lines = (["{\"contact_phone\": \"+6281200000001\","] * _BAD["json"]
                 + [json.dumps(_document(0, contact_phone="08123"))] * _BAD["phone"]
                 + [json.dumps(_document(1, lead_score=150))] * _BAD["score"])
    kinds = ["json"] * _BAD["json"] + ["phone"] * _BAD["phone"] + ["score"] * _BAD["score"]
    slots = sorted(rng.sample(range(len(lines) + len(bad_lines)), len(bad_lines)))
    for slot, line in zip(slots, bad_lines, strict=True):
        lines.insert(slot, line)
    # Duplicates come after the originals: newer ones with changes, and exact copies.
    duplicates = [
        json.dumps(_document(i, contact_phone=_spelling(i), lead_score=100, state="handoff",
                             extracted_data={"goals": "grow"}, message_count=8,
                             created_at=_T0 + i * 1000 + 5, updated_at=_T0 + 9 * _HOUR,
                             last_message_at=_T0 + 9 * _HOUR))
        for i in range(_NEWER_DUPLICATES)
    ] + [
        json.dumps(_document(i, contact_phone=_spelling(i)))
        for i in range(_NEWER_DUPLICATES, _NEWER_DUPLICATES + _SAME_DUPLICATES)
    ]
    rng.shuffle(duplicates)
    lines += duplicates
    assert len(lines) == 10_000
    path.write_text("\n".join(lines) + "\n")
    return {slot + 1: _REASONS[kind] for slot, kind in zip(slots, kinds, strict=True)}


def _sarah_import(target: str, path: Path) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "client", "import", str(path), "--json", "--target", target],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def test_import_of_10000_line_export_twice(sqlite_server: RunningServer, tmp_path: Path) -> None:
    export = tmp_path / "sarahConversations.jsonl"
    expected_rejections = _write_export(export)
    target = f"127.0.0.1:{sqlite_server.port}"

    code, first = _sarah_import(target, export)
    assert code == 3  # finished, with rejected lines
    assert (first["imported"], first["merged"], first["unchanged"]) == (
        _UNIQUE, _NEWER_DUPLICATES, _SAME_DUPLICATES)
    rejected = {r["line"]: r["reason"] for r in first["rejected"]}
    assert rejected.keys() == expected_rejections.keys()
    for line, reason in expected_rejections.items():
        assert reason in rejected[line], (line, rejected[line])

    with SarahClient(target) as sarah:
        assert sarah.get_stats().total == _UNIQUE
        kept = sarah.get_state(contact_phone="0812-0000-8999")  # imported once, never merged
        assert (_ms(kept.created_at), _ms(kept.updated_at), _ms(kept.last_message_at)) == (
            _T0 + 8_999_000, _T0 + 8_999_000 + _HOUR, _T0 + 8_999_000 + _HOUR)
        assert kept.extracted_data.name == "Lead 8999" and kept.lead_score == 8999 % 101
        merged = sarah.get_state(contact_phone=_phone(7))
        assert (_ms(merged.created_at), _ms(merged.updated_at)) == (_T0 + 7000, _T0 + 9 * _HOUR)
        assert (merged.state, merged.lead_score, merged.message_count) == (pb.handoff, 100, 8)
        assert (merged.extracted_data.name, merged.extracted_data.goals) == ("Lead 7", "grow")
        before = [(lead.contact_phone, lead.etag) for lead in sarah.iter_leads(page_size=500)]

    code, second = _sarah_import(target, export)
    assert code == 3
    assert (second["imported"], second["merged"], second["unchanged"]) == (
        0, 0, _UNIQUE + _NEWER_DUPLICATES + _SAME_DUPLICATES)
    assert second["rejected"] == first["rejected"]
    with SarahClient(target) as sarah:
        after = [(lead.contact_phone, lead.etag) for lead in sarah.iter_leads(page_size=500)]
    assert after == before  # not one lead was written again


def _admin_and_stub(running: RunningServer) -> tuple[grpc.Channel, object, object]:
    from sarah.v1 import sarah_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    return (channel, sarah_pb2_grpc.SarahAdminServiceStub(channel),
            sarah_pb2_grpc.SarahServiceStub(channel))


def test_leads_known_by_bsuid_import_and_merge_by_the_identity_rules(
        running: RunningServer) -> None:
    bsuid = "ID.1648738043044942"
    channel, admin, stub = _admin_and_stub(running)
    with channel:
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, lead_score=10), timeout=10)
        batch = [
            _conversation(business_scoped_user_id="ID.77", username="siti", lead_score=60,
                          created_at=_T0, updated_at=_T0),
            # The stored phone lead gets the BSUID: one person, not two.
            _conversation(contact_phone=PHONE, business_scoped_user_id=bsuid,
                          parent_business_scoped_user_id="ID.parent", created_at=_T0,
                          updated_at=_T0, extracted_data=pb.ExtractedData(name="Budi")),
        ]
        results = admin.ImportConversations(
            pb.ImportConversationsRequest(conversations=batch), timeout=10).results
        assert [(pb.ImportOutcome.Name(r.outcome), r.business_scoped_user_id) for r in results] \
            == [("imported", "ID.77"), ("merged", bsuid)]
        again = admin.ImportConversations(
            pb.ImportConversationsRequest(conversations=batch), timeout=10).results
        assert [pb.ImportOutcome.Name(r.outcome) for r in again] == ["unchanged", "unchanged"]
        siti = stub.GetState(pb.GetStateRequest(business_scoped_user_id="ID.77"), timeout=10)
        budi = stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid), timeout=10)
        total = stub.GetStats(pb.GetStatsRequest(), timeout=10).total
    assert (siti.contact_phone, siti.username, siti.lead_score) == ("", "siti", 60)
    assert (budi.contact_phone, budi.parent_business_scoped_user_id) == (PHONE, "ID.parent")
    assert budi.extracted_data.name == "Budi" and total == 2


def test_old_exports_without_the_identity_fields_still_load(
        running: RunningServer, tmp_path: Path) -> None:
    """A line written before v1.1 (no BSUID, parent BSUID or username) and one written after
    it, keyed by BSUID only, load in one file."""
    old = {"_id": "a1", "contact_phone": "0812-3456-7890", "lead_score": 50,
           "created_at": _T0, "updated_at": _T0}
    new = {"business_scoped_user_id": "ID.1648738043044942", "username": "tokosari",
           "parent_business_scoped_user_id": "ID.ENT.1", "contact_phone": "",
           "lead_score": 70, "created_at": _T0, "updated_at": _T0 + _HOUR}
    export = tmp_path / "export.jsonl"
    export.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "client", "import", str(export), "--json",
         "--target", f"127.0.0.1:{running.port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["imported"] == 2
    with SarahClient(f"127.0.0.1:{running.port}") as sarah:
        by_phone = sarah.get_state(contact_phone=PHONE)
        by_bsuid = sarah.get_state(business_scoped_user_id="ID.1648738043044942")
    assert (by_phone.lead_score, by_phone.business_scoped_user_id) == (50, "")
    assert (by_bsuid.lead_score, by_bsuid.contact_phone, by_bsuid.username,
            by_bsuid.parent_business_scoped_user_id) == (70, "", "tokosari", "ID.ENT.1")
    assert _ms(by_bsuid.updated_at) == _T0 + _HOUR


def test_an_import_merge_keeps_the_history_and_counts_leads_on_their_own_days(
        client: SarahClient, running: RunningServer, database_url: str) -> None:
    """A stored phone lead and a stored BSUID lead that an imported conversation shows to be
    one person: one lead, with both halves' history; the imported new lead counts on the
    day the earlier backend created it, the merge adds no lead and no messages."""
    bsuid = "ID.1648738043044942"
    client.upsert_state(contact_phone=PHONE, message_count=2)
    client.upsert_state(business_scoped_user_id=bsuid, message_count=3)
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        before = stub.GetActivity(pb.GetActivityRequest(days=2), timeout=10).days
        assert _outcomes(client, _conversation(
            contact_phone=PHONE, business_scoped_user_id=bsuid, created_at=_T0,
            updated_at=_T0), _conversation(
            contact_phone="+6281200000009", message_count=7, state="completed",
            created_at=_T0, updated_at=_T0 + 24 * _HOUR)) == ["merged", "imported"]
        events = stub.ListEvents(pb.ListEventsRequest(business_scoped_user_id=bsuid),
                                 timeout=10).events
        after = stub.GetActivity(pb.GetActivityRequest(days=2), timeout=10).days
    assert [pb.EventKind.Name(e.kind) for e in events] == [
        "upserted", "deleted", "upserted", "upserted"]
    assert [(e.conversation.contact_phone, e.conversation.business_scoped_user_id)
            for e in events][1:] == [(PHONE, ""), ("", bsuid), (PHONE, "")]
    assert [(d.new_leads, d.messages) for d in after] == [(d.new_leads, d.messages)
                                                          for d in before]
    imported = query(database_url, "SELECT bucket, new_leads, messages, reached_completed "
                     f"FROM activity WHERE bucket <= {(_T0 + 24 * _HOUR) // 900_000} "
                     "ORDER BY bucket")
    assert imported == [(_T0 // 900_000, 1, 7, 0), ((_T0 + 24 * _HOUR) // 900_000, 0, 0, 1)]


def test_an_export_of_leads_with_every_slot_full_imports_whole(
        sqlite_server: RunningServer, tmp_path: Path) -> None:
    """60 leads with each free-text slot at its 4,096 characters make ~5.6 MB: more than
    gRPC's 4 MiB message, so the import sends them in batches cut by size, not count."""
    full = {"name": "n" * 4096, "business_type": "b" * 4096, "goals": "g" * 4096,
            "pain_points": [f"{p:02d}" + "p" * 4094 for p in range(20)]}
    export = tmp_path / "full.jsonl"
    export.write_text("".join(
        json.dumps(_document(i, extracted_data=full)) + "\n" for i in range(60)))

    code, summary = _sarah_import(f"127.0.0.1:{sqlite_server.port}", export)

    assert (code, summary["imported"], summary["rejected"]) == (0, 60, [])
    with SarahClient(f"127.0.0.1:{sqlite_server.port}") as sarah:
        stored = sarah.get_state(contact_phone=_phone(59)).extracted_data
        assert (stored.goals, list(stored.pain_points)) == (full["goals"], full["pain_points"])
