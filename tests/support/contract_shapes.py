"""The contract's JSON shapes, checked key by key: what any successful answer must look like.

Written from docs/api.md, not from the server's code, so a server bug cannot
teach the checker its own mistake. gRPC answers are checked too, printed as the
transcoder prints them (`grpc_json`).
"""

import itertools
import re
from datetime import date, datetime, timedelta

from google.protobuf import json_format
from google.protobuf.message import Message

STATES = ("greeting", "qualifying", "scoring", "handoff", "completed")
TEMPERATURES = ("hot", "warm", "cold")
LANGUAGES = ("id", "en")
_MAX_COUNT = 1_000_000
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_WORKSPACE = re.compile(r"[A-Za-z0-9_-]{0,64}")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_BSUID = re.compile(r"[A-Z]{2}\.[A-Za-z0-9]{1,128}")
_PARENT_BSUID = re.compile(r"([A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONVERSATION_KEYS = {
    "contact_phone", "workspace_id", "state", "lead_score", "lead_temperature",
    "extracted_data", "language", "message_count", "etag",
    "business_scoped_user_id", "parent_business_scoped_user_id", "username",
}
_TIMESTAMP_KEYS = {"created_at", "updated_at", "last_message_at"}
_TEXT_SLOTS = {"name": 4096, "business_type": 4096, "goals": 4096}
_MAX_PAIN_POINT = 4096
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\.py\", line \d+")


def grpc_json(message: Message) -> dict:
    """A gRPC answer as Envoy's transcoder prints it: snake_case, primitives always."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _count(value: object, where: str, high: int = _MAX_COUNT) -> None:
    assert type(value) is int and 0 <= value <= high, f"{where}: {value!r} is not a count"


def _timestamp(value: object, where: str) -> None:
    assert isinstance(value, str) and _RFC3339_UTC.fullmatch(value), f"{where}: {value!r}"
    datetime.fromisoformat(value)  # a real date: no month 13, no second 61


def check_conversation(c: object, where: str = "conversation") -> None:
    assert isinstance(c, dict), f"{where}: {c!r} is not an object"
    keys = set(c)
    assert _CONVERSATION_KEYS <= keys <= _CONVERSATION_KEYS | _TIMESTAMP_KEYS, (where, keys)
    # A lead is known by its phone, its BSUID or both: "" is the one it lacks.
    phone, bsuid = c["contact_phone"], c["business_scoped_user_id"]
    assert isinstance(phone, str) and (phone == "" or _E164.fullmatch(phone)), c
    assert isinstance(bsuid, str) and (bsuid == "" or _BSUID.fullmatch(bsuid)), c
    assert phone or bsuid or not c["etag"], c  # a stored lead has at least one key
    parent, username = c["parent_business_scoped_user_id"], c["username"]
    assert isinstance(parent, str) and _PARENT_BSUID.fullmatch(parent), c
    assert isinstance(username, str) and len(username) <= 64, c
    assert not _CONTROL.search(username), c
    assert isinstance(c["workspace_id"], str) and _WORKSPACE.fullmatch(c["workspace_id"]), c
    assert c["state"] in STATES, c
    assert c["lead_temperature"] in TEMPERATURES, c
    assert c["language"] in LANGUAGES, c
    _count(c["lead_score"], f"{where}.lead_score", high=100)
    _count(c["message_count"], f"{where}.message_count")
    assert isinstance(c["etag"], str), c
    # A stored conversation has an etag and all three timestamps; the default one neither.
    stamps = keys & _TIMESTAMP_KEYS
    assert stamps == (_TIMESTAMP_KEYS if c["etag"] else set()), (where, c)
    for key in stamps:
        _timestamp(c[key], f"{where}.{key}")
    _check_extracted(c["extracted_data"], f"{where}.extracted_data")


def _check_extracted(data: object, where: str) -> None:
    assert isinstance(data, dict), f"{where}: {data!r}"
    assert "pain_points" in data and set(data) <= {*_TEXT_SLOTS, "team_size", "pain_points"}
    for slot, limit in _TEXT_SLOTS.items():
        if slot in data:
            assert isinstance(data[slot], str) and len(data[slot]) <= limit, (where, slot)
            assert "\x00" not in data[slot], (where, slot)
    if "team_size" in data:
        _count(data["team_size"], f"{where}.team_size")
    points = data["pain_points"]
    assert isinstance(points, list) and len(points) <= 20, (where, points)
    assert all(isinstance(p, str) and len(p) <= _MAX_PAIN_POINT for p in points), (
        where, points)


_REVISION = re.compile(r"0|[1-9][0-9]{0,18}")  # an int64 >= 0, printed as a JSON string
_EVENT_KINDS = ("upserted", "deleted", "heartbeat")


def _revision(value: object, where: str) -> None:
    assert isinstance(value, str) and _REVISION.fullmatch(value), f"{where}: {value!r}"


def check_lead_event(event: object) -> None:
    """A WatchLeads event (contract: Live changes)."""
    assert isinstance(event, dict), event
    keys = set(event)
    assert {"revision", "kind", "changed", "at"} <= keys <= {
        "revision", "kind", "changed", "at", "conversation"}, event
    _revision(event["revision"], "revision")
    assert event["kind"] in _EVENT_KINDS, event
    _timestamp(event["at"], "at")
    changed = event["changed"]
    assert isinstance(changed, list) and all(isinstance(p, str) for p in changed), event
    if event["kind"] == "heartbeat":
        assert "conversation" not in event and changed == [], event
    else:
        check_conversation(event["conversation"])


def check_leads_page(page: object) -> None:
    assert isinstance(page, dict) and set(page) == {
        "leads", "next_page_token", "revision"}, page
    _revision(page["revision"], "revision")
    assert isinstance(page["leads"], list) and len(page["leads"]) <= 500, page
    assert isinstance(page["next_page_token"], str), page
    for i, lead in enumerate(page["leads"]):
        check_conversation(lead, f"leads[{i}]")


def check_events_page(page: object) -> None:
    """A ListEvents page (contract: History and activity): events newest first."""
    assert isinstance(page, dict) and set(page) == {"events", "next_page_token"}, page
    assert isinstance(page["events"], list) and len(page["events"]) <= 500, page
    assert isinstance(page["next_page_token"], str), page
    for event in page["events"]:
        check_lead_event(event)
        assert event["kind"] != "heartbeat", event
    revisions = [int(e["revision"]) for e in page["events"]]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == len(
        revisions), page


_ACTIVITY_COUNTS = ("new_leads", "messages", "reached_handoff", "reached_completed",
                    "became_hot")


def check_activity(reply: object) -> None:
    """A GetActivity answer: one entry per day, oldest first, consecutive dates."""
    assert isinstance(reply, dict) and set(reply) == {"days", "time_zone"}, reply
    assert isinstance(reply["time_zone"], str) and reply["time_zone"], reply
    days = reply["days"]
    assert isinstance(days, list) and 1 <= len(days) <= 366, reply
    for day in days:
        assert isinstance(day, dict) and set(day) == {"date", *_ACTIVITY_COUNTS}, day
        for key in _ACTIVITY_COUNTS:
            _count(day[key], key, high=2**31 - 1)
    dates = [date.fromisoformat(day["date"]) for day in days]
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(dates)), reply


def check_stats(stats: object) -> None:
    assert isinstance(stats, dict), stats
    assert set(stats) == {
        "total", "hot", "warm", "cold", "avg_score", "by_state", "revision"}, stats
    _revision(stats["revision"], "revision")
    for key in ("total", "hot", "warm", "cold"):
        _count(stats[key], key, high=2**31 - 1)
    assert stats["hot"] + stats["warm"] + stats["cold"] == stats["total"], stats
    score = stats["avg_score"]
    assert type(score) in (int, float) and 0 <= score <= 100, stats
    by_state = stats["by_state"]
    assert isinstance(by_state, dict) and set(by_state) == set(STATES), stats
    for state, count in by_state.items():
        _count(count, f"by_state.{state}", high=2**31 - 1)
    assert sum(by_state.values()) == stats["total"], stats


def check_deleted(reply: object) -> None:
    assert isinstance(reply, dict) and set(reply) == {"deleted"}, reply
    assert type(reply["deleted"]) is bool, reply


def check_error_body(status: int, body: object) -> None:
    """Every error through Envoy: a JSON object with an integer code and a string message."""
    assert isinstance(body, dict), f"HTTP {status} without a JSON object body: {body!r}"
    assert type(body.get("code")) is int and body["code"] != 0, (status, body)
    assert isinstance(body.get("message"), str), (status, body)
    assert set(body) <= {"code", "message", "details"}, (status, body)
    assert isinstance(body.get("details", []), list), (status, body)


def assert_no_traceback(text: str) -> None:
    assert not _TRACEBACK.search(text), f"a traceback leaked: {text[:2000]}"
