"""Hostile input: properties (Hypothesis) of every answer to arbitrary JSON bodies, query
strings, protobuf messages and raw bytes, through the real Envoy and straight at gRPC.

The properties: no 5xx (the server is up, so not even 503) and no UNKNOWN, INTERNAL or
DATA_LOSS; every error through Envoy is JSON
with an integer `code` and a string `message`; every success has the contract's JSON shape
(tests/contract_shapes.py); no traceback text; and a refused request changes nothing (the
seeded lead, etag included, and the count of leads are the same after it).
SARAH_FUZZ_EXAMPLES raises the number of examples per property (default 60,
derandomized); SARAH_FUZZ_RANDOM=1 draws new ones (`make fuzz`).
"""

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support import contract_shapes as shapes
from tests.support.docs import docs_section
from tests.support.helpers import KAPSO_BODY, PHONE
from tests.support.hostile import (
    METHOD_OF,
    PAGE_TOKEN,
    SEED_ETAG,
    SEED_WORKSPACE,
    encoded_bodies,
    identity_bodies,
    identity_messages,
    query_strings,
    raw_requests,
    read_messages,
    upsert_messages,
)
from tests.support.stack import Stack

settings.register_profile(
    "sarah-fuzz",
    max_examples=int(os.environ.get("SARAH_FUZZ_EXAMPLES", "60")),
    deadline=None,  # each example is a few real HTTP or gRPC calls
    derandomize=os.environ.get("SARAH_FUZZ_RANDOM") != "1",  # CI: the same examples each run
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
fuzz = settings.get_profile("sarah-fuzz")
# A failing example's repr can be a megabyte of body; Hypothesis warns, and still prints it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

_CODE_OF_HTTP = {400: 3, 404: 5, 409: 10, 413: 8, 431: 8}
_REQUEST_OF = {name: cls for cls, name in METHOD_OF.items()}
_REPLY_OF = {"GetState": pb.Conversation, "UpsertState": pb.Conversation,
             "ChangeIdentity": pb.Conversation,
             "DeleteState": pb.DeleteStateResponse, "GetStats": pb.GetStatsResponse,
             "ListLeads": pb.ListLeadsResponse, "ListEvents": pb.ListEventsResponse,
             "GetActivity": pb.GetActivityResponse}
_SHAPE_OF = {"GetState": shapes.check_conversation, "UpsertState": shapes.check_conversation,
             "ChangeIdentity": shapes.check_conversation,
             "DeleteState": shapes.check_deleted, "GetStats": shapes.check_stats,
             "ListLeads": shapes.check_leads_page, "ListEvents": shapes.check_events_page,
             "GetActivity": shapes.check_activity}


class Target:
    """The stack under attack, a gRPC stub straight to its server, and the seeded lead."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.channel = grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")
        self.stub = sarah_pb2_grpc.SarahServiceStub(self.channel)
        self.key = pb.GetStateRequest(contact_phone=PHONE, workspace_id=SEED_WORKSPACE)
        for i in range(3):  # neighbours, so that pages of one lead have a next_page_token
            self.stub.UpsertState(pb.UpsertStateRequest(
                contact_phone=f"+628123456780{i}", workspace_id=SEED_WORKSPACE, lead_score=i))
        _, _, page = stack.envoy.call("GET", "/sarah/leads?page_size=1")
        self.page_token = page["next_page_token"]
        assert self.page_token

    def seed(self) -> pb.Conversation:
        """The seeded lead, written again if an accepted delete took it away."""
        lead = self.stub.GetState(self.key, timeout=10)
        if not lead.etag:
            body = json_format.ParseDict({**KAPSO_BODY, "workspace_id": SEED_WORKSPACE},
                                         pb.UpsertStateRequest())
            lead = self.stub.UpsertState(body, timeout=10)
        return lead

    def snapshot(self) -> tuple[pb.Conversation, pb.GetStatsResponse, list[int]]:
        """What a refused request must leave alone: the seeded lead, the count of leads and
        the log's revision (in the stats), and the activity counts (summed over a year, so
        a run across midnight does not move them)."""
        days = self.stub.GetActivity(pb.GetActivityRequest(days=366), timeout=10).days
        return (self.stub.GetState(self.key, timeout=10),
                self.stub.GetStats(pb.GetStatsRequest(), timeout=10),
                [sum(getattr(d, f) for d in days) for f in (
                    "new_leads", "messages", "reached_handoff", "reached_completed",
                    "became_hot")])


@pytest.fixture(scope="module")
def target(stack: Stack) -> Iterator[Target]:
    running = Target(stack)
    yield running
    running.channel.close()


def _event(text: str) -> None:
    """Count an outcome: `pytest --hypothesis-show-statistics` shows what was reached."""
    if currently_in_test_context():
        event(text)


def _check_http(status: int, headers: dict[str, str], body: object,
                shape: Callable[[object], None], refusals: set[int]) -> bool:
    """Check one answer through Envoy; True if it was a success."""
    shapes.assert_no_traceback(body if isinstance(body, str) else json.dumps(body))
    assert headers.get("content-type", "").startswith("application/json"), (status, headers)
    _event(f"HTTP {status}")
    if status == 200:
        shape(body)
        return True
    shapes.check_error_body(status, body)
    assert isinstance(body, dict)
    assert status in refusals, (status, body)
    assert body["code"] == _CODE_OF_HTTP[status], (status, body)
    return False


@fuzz
@given(raw=encoded_bodies())
def test_any_post_body_gets_a_contract_answer_and_a_refusal_writes_nothing(
        target: Target, raw: bytes) -> None:
    seed = target.seed()
    raw = raw.replace(json.dumps(SEED_ETAG).encode(), json.dumps(seed.etag).encode())
    before = target.snapshot()
    status, headers, body = target.stack.envoy.call("POST", "/sarah/state", raw)
    if not _check_http(status, headers, body, shapes.check_conversation, {400, 409, 413}):
        assert target.snapshot() == before, (raw[:300], status, body)


@fuzz
@given(raw=identity_bodies())
def test_any_identity_change_body_gets_a_contract_answer_and_a_refusal_writes_nothing(
        target: Target, raw: bytes) -> None:
    target.seed()
    before = target.snapshot()
    status, headers, body = target.stack.envoy.call("POST", "/sarah/identity", raw)
    if not _check_http(status, headers, body, shapes.check_conversation, {400, 404, 413}):
        assert target.snapshot() == before, (raw[:300], status, body)


@pytest.mark.parametrize(("method", "path", "shape"), [
    ("GET", "/sarah/state", shapes.check_conversation),
    ("GET", "/sarah/leads", shapes.check_leads_page),
    ("GET", "/sarah/stats", shapes.check_stats),
    ("DELETE", "/sarah/state", shapes.check_deleted),
    ("GET", "/sarah/history", shapes.check_events_page),
    ("GET", "/sarah/activity", shapes.check_activity),
])
@fuzz
@given(query=query_strings())
def test_any_query_string_gets_a_contract_answer_and_writes_nothing_unasked(
        target: Target, method: str, path: str, shape: Callable[[object], None],
        query: str) -> None:
    target.seed()
    before = target.snapshot()
    sent = f"{path}?{query.replace(PAGE_TOKEN, target.page_token)}"
    status, headers, body = target.stack.envoy.call(method, sent)
    ok = _check_http(status, headers, body, shape, {400, 431})
    if not (ok and method == "DELETE"):
        assert target.snapshot() == before, (sent, status, body)


def _check_grpc(method: str, call: Callable[[], object], decodable: bool = True) -> bool:
    """Make one gRPC call and check its answer; True if it succeeded."""
    try:
        reply = call()
    except grpc.RpcError as err:
        _event(f"{method} {err.code().name}")
        _check_grpc_error(method, err, decodable)
        return False
    _event(f"{method} OK")
    if isinstance(reply, bytes):
        reply = _REPLY_OF[method].FromString(reply)
    _SHAPE_OF[method](shapes.grpc_json(reply))
    return True


def _check_grpc_error(method: str, err: grpc.RpcError, decodable: bool) -> None:
    code, details = err.code(), err.details() or ""
    shapes.assert_no_traceback(details)
    if not decodable:  # refused before the service: no field to name
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
        return
    refusals = {grpc.StatusCode.INVALID_ARGUMENT}
    if method == "UpsertState":
        refusals.add(grpc.StatusCode.ABORTED)  # etag mismatch
    if method == "ChangeIdentity":
        refusals.add(grpc.StatusCode.NOT_FOUND)  # neither key finds a lead
    assert code in refusals, (method, code, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:  # the server names each bad field
        status = rpc_status.from_call(err)
        assert status is not None and status.details, details
        violations = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(violations) and violations.field_violations
        assert all(v.field and v.description for v in violations.field_violations)


@fuzz
@given(request=upsert_messages)
def test_any_upsert_message_gets_a_contract_answer_and_a_refusal_writes_nothing(
        target: Target, request: pb.UpsertStateRequest) -> None:
    seed = target.seed()
    if request.HasField("etag") and request.etag == SEED_ETAG:
        request.etag = seed.etag
    before = target.snapshot()
    if not _check_grpc("UpsertState", lambda: target.stub.UpsertState(request, timeout=10)):
        assert target.snapshot() == before, request


@fuzz
@given(request=identity_messages)
def test_any_identity_change_message_gets_a_contract_answer_and_a_refusal_writes_nothing(
        target: Target, request: pb.ChangeIdentityRequest) -> None:
    target.seed()
    before = target.snapshot()
    if not _check_grpc("ChangeIdentity",
                       lambda: target.stub.ChangeIdentity(request, timeout=10)):
        assert target.snapshot() == before, request


@fuzz
@given(request=read_messages)
def test_any_read_or_delete_message_gets_a_contract_answer(target: Target, request) -> None:
    target.seed()
    before = target.snapshot()
    method = METHOD_OF[type(request)]
    call = getattr(target.stub, method)
    if not _check_grpc(method, lambda: call(request, timeout=10)) or method != "DeleteState":
        assert target.snapshot() == before, request


@fuzz
@given(sent=raw_requests())
def test_any_bytes_as_a_request_get_a_contract_answer(
        target: Target, sent: tuple[str, bytes]) -> None:
    method, raw = sent
    try:
        _REQUEST_OF[method].FromString(raw)
        decodable = True
    except DecodeError:
        decodable = False
    target.seed()
    before = target.snapshot()
    call = target.channel.unary_unary(f"/sarah.v1.SarahService/{method}")  # bytes in, bytes out
    if not _check_grpc(method, lambda: call(raw, timeout=10), decodable) or (
            method not in ("UpsertState", "DeleteState", "ChangeIdentity")):
        assert target.snapshot() == before, (method, raw)


# Regression tests of what the properties found, each fixed where it belongs.

@pytest.mark.parametrize("fields", [
    {"extracted_data": pb.ExtractedData(name="Bu\x00di")},
    {"extracted_data": pb.ExtractedData(business_type="\x00")},
    {"extracted_data": pb.ExtractedData(goals="grow\x00")},
    {"extracted_data": pb.ExtractedData(pain_points=["ok", "slow\x00"])},
    {"request_id": "wamid.\x00"},
])
def test_nul_in_stored_text_is_invalid_argument_on_both_databases(
        target: Target, fields: dict) -> None:
    # PostgreSQL cannot store NUL in text: this was UNAVAILABLE "retry shortly" (503) there.
    target.seed()
    before = target.snapshot()
    request = pb.UpsertStateRequest(contact_phone=PHONE, workspace_id=SEED_WORKSPACE, **fields)
    with pytest.raises(grpc.RpcError) as caught:
        target.stub.UpsertState(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in caught.value.details()
    assert target.snapshot() == before


@pytest.mark.parametrize("call", [
    lambda stub: stub.ListLeads(pb.ListLeadsRequest(order_by="😀" * 5000), timeout=10),
    lambda stub: stub.UpsertState(pb.UpsertStateRequest(
        contact_phone=PHONE, workspace_id=SEED_WORKSPACE, etag="😀" * 5000), timeout=10),
])
def test_a_huge_wrong_value_is_not_echoed_into_an_oversized_status(target: Target, call) -> None:
    # The whole value used to be quoted in the status message and again in its details:
    # over gRPC's 8 KiB limit for a status, the caller got RESOURCE_EXHAUSTED instead.
    target.seed()
    with pytest.raises(grpc.RpcError) as caught:
        call(target.stub)
    assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED)
    assert len(caught.value.details()) < 1000 and "…" in caught.value.details()


@pytest.mark.parametrize("length", [4000, 7500, 12_000, 20_000, 70_000])
def test_a_url_over_4_kib_is_json_431_every_time(target: Target, length: int) -> None:
    # Envoy used to forward it, and the server refused its metadata: a 429 with gRPC's
    # internals in the message, at random between 7.5 and 16 KiB, always above.
    path = f"/sarah/state?contact_phone={PHONE}&workspace_id={SEED_WORKSPACE}&utm="
    for _ in range(5):
        status, _, error = target.stack.envoy.call("GET", path + "x" * length)
        assert (status, error["code"]) == (431, 8), error
    status, _, lead = target.stack.envoy.call("GET", path + "x" * 3000)
    assert status == 200, lead


def test_forged_page_token_is_invalid_argument(target: Target) -> None:
    # The fingerprint is a plain hash of the query, so anyone can forge a token that passes
    # it. This was a 500 on SQLite (an integer past 64 bits), a 503 on PostgreSQL (a
    # boolean, NUL) and a 500 on both (a lone surrogate).
    from server.core.domain import ListQuery
    from server.core.pagination import encode_token

    answers = []
    for position in [(10**30, PHONE, ""), (True, PHONE, ""), (5, "a\x00b", ""),
                     (5, PHONE, "\x00"), (5, "\ud800", "")]:
        token = encode_token(ListQuery(), position)
        status, _, error = target.stack.envoy.call("GET", f"/sarah/leads?page_token={token}")
        answers.append((position, status, error))
    assert all(status == 400 for _, status, _ in answers), answers


# docs/api.md's "Bad input" table, row by row: each row is run here, and the page must list
# exactly these rows, rendered by _render.


@dataclass(frozen=True)
class Row:
    what: str
    method: str
    sent: str | bytes  # the path, or for POST the body
    status: int
    code: int | None = None
    says: str = ""  # a part of `message`
    field: str | None = None  # a field the BadRequest details name
    shown: str | None = None  # the docs' spelling of a body too long or raw to print
    keeps: str | None = None  # a field an accepted write leaves as it was
    path: str = "/sarah/state"  # where a POST goes


_P = '{"contact_phone": "6281234567890", '
HTTP_ROWS = [
    Row("malformed JSON", "POST", _P + '"lead_score": ', 400, 3, "Unexpected end of string"),
    Row("`NaN`, `Infinity`", "POST", _P + '"lead_score": NaN}', 400, 3, "Unexpected token"),
    Row("JSON that is not an object", "POST", "[1, 2]", 400, 3,
        "Root element must be a message"),
    Row("invalid UTF-8 in the body", "POST", b'{"contact_phone": "\xff"}', 400, 3, "non UTF-8",
        shown='{"contact_phone": "<byte FF>"}'),
    Row("a lone surrogate", "POST", '{"contact_phone": "\\ud800"}', 400, 3,
        "Missing low surrogate"),
    Row("a wrong JSON type", "POST", _P + '"lead_score": "high"}', 400, 3,
        "lead_score: invalid value"),
    Row("a fraction, or a number past 32 bits", "POST", _P + '"lead_score": 1e20}', 400, 3,
        "lead_score: invalid value 1e+20"),
    Row("a list where a text goes", "POST", _P + '"extracted_data": {"name": ["Budi"]}}', 400,
        3, "not repeating"),
    Row("an enum word not in the contract (case counts)", "POST", _P + '"state": "QUALIFYING"}',
        400, 3, 'state: invalid value "QUALIFYING"'),
    Row("an enum number no word stands for", "POST", _P + '"state": 7}', 400, 3,
        "state: must be one of", "state"),
    Row("an empty body, no `contact_phone`", "POST", "", 400, 3, "contact_phone: is required",
        "contact_phone"),
    Row("a phone number that is not valid", "POST", '{"contact_phone": "08123"}', 400, 3,
        "'08123' is not a valid phone number", "contact_phone"),
    Row("a key given twice (the last one counts)", "POST", _P + '"contact_phone": "08123"}',
        400, 3, "'08123' is not a valid phone number", "contact_phone"),
    Row("numbers out of range", "POST", _P + '"lead_score": -1, "message_count": 1000001}', 400,
        3, "lead_score: must be from 0 to 100", "message_count"),
    Row("text over its limit", "POST",
        _P + '"extracted_data": {"business_type": "' + "x" * 4097 + '"}}', 400, 3,
        "must be at most 4096 characters", "extracted_data.business_type",
        shown=_P + '"extracted_data": {"business_type": "x" × 4097}}'),
    Row("a NUL character in a text", "POST", _P + '"extracted_data": {"name": "Bu\\u0000di"}}',
        400, 3, "must not contain NUL characters", "extracted_data.name"),
    Row("a `workspace_id` outside `A-Z a-z 0-9 _ -`", "POST", _P + '"workspace_id": "toko b"}',
        400, 3, "workspace_id: must be at most 64", "workspace_id"),
    Row("`message_count` and `add_messages` together", "POST",
        _P + '"message_count": 3, "add_messages": 1}', 400, 3, "cannot be combined",
        "add_messages"),
    Row("a stale etag", "POST", _P + '"etag": "stale"}', 409, 10,
        "does not match the stored etag"),
    Row("a huge wrong value (quoted back cut to 40 characters)", "POST",
        _P + '"etag": "' + "😀" * 5000 + '"}', 409, 10, "…' does not match",
        shown=_P + '"etag": "😀" × 5000}'),
    Row("a body over 1 MiB", "POST", _P + '"extracted_data": {"goals": "' + "x" * (2 << 20)
        + '"}}', 413, 8, "Payload Too Large",
        shown=_P + '"extracted_data": {"goals": "x" × 2 MiB}}'),
    Row("a number as a string, an enum as its number", "POST",
        _P + '"lead_score": "45", "state": 1}', 200),
    Row("a text where a list goes (a list of one)", "POST",
        _P + '"extracted_data": {"pain_points": "slow"}}', 200),
    Row("`null` (the field keeps its value)", "POST", _P + '"lead_score": null}', 200,
        keeps="lead_score"),
    Row("an unknown or misspelt key (dropped)", "POST", _P + '"lead_scroe": 99}', 200,
        keeps="lead_score"),
    Row("a repeated parameter (the last one counts)", "GET",
        "/sarah/state?contact_phone=08123&contact_phone=%2B6281234567890", 200),
    Row("a repeated optional parameter", "GET", "/sarah/stats?workspace_id=a&workspace_id=b",
        400, 3, "already set"),
    Row("a number past 32 bits in a query", "GET", "/sarah/leads?page_size=99999999999", 400, 3,
        "page_size: invalid value"),
    Row("a negative `page_size`", "GET", "/sarah/leads?page_size=-1", 400, 3,
        "must not be negative", "page_size"),
    Row("a huge `page_size` (at most 500 leads come back)", "GET",
        "/sarah/leads?page_size=2147483647", 200),
    Row("a garbage `page_token`", "GET", "/sarah/leads?page_token=garbage", 400, 3,
        "is not a token this service issued", "page_token"),
    Row("an unknown `order_by`", "GET", "/sarah/leads?order_by=score", 400, 3,
        "order_by: must be one of", "order_by"),
    Row("an unknown enum word in a query", "GET", "/sarah/leads?temperature=boiling", 400, 3,
        'temperature: invalid value "boiling"'),
    Row("a malformed percent escape (taken literally)", "GET", "/sarah/state?contact_phone=%ZZ",
        400, 3, "'%ZZ' is not a valid phone number", "contact_phone"),
    Row("unknown, empty and undecodable parameter names (ignored)", "GET",
        "/sarah/state?contact_phone=%2B6281234567890&utm_source=x&%FF=1&=&&", 200),
    Row("an escape that is not UTF-8", "GET", "/sarah/state?contact_phone=%FF", 400, 3,
        "does not decode"),
    Row("a URL over 4 KiB", "GET", "/sarah/state?contact_phone=6281234567890&utm=" + "x" * 4096,
        431, 8, "Request Header Fields Too Large",
        shown="/sarah/state?contact_phone=6281234567890&utm=x…(4 KiB)"),
    Row("`DELETE` without `contact_phone`", "DELETE", "/sarah/state", 400, 3,
        "contact_phone: is required", "contact_phone"),
    Row("a malformed BSUID", "POST", '{"business_scoped_user_id": "id.1648738043044942"}', 400,
        3, "business_scoped_user_id", "business_scoped_user_id"),
    Row("a malformed BSUID in a query", "GET", "/sarah/state?business_scoped_user_id=ID.", 400,
        3, "business_scoped_user_id", "business_scoped_user_id"),
    Row("a `username` over 64 characters", "POST", _P + '"username": "' + "x" * 65 + '"}', 400,
        3, "username", "username", shown=_P + '"username": "x" × 65}'),
    Row("a BSUID over 128 letters and digits", "POST",
        '{"business_scoped_user_id": "ID.' + "1" * 129 + '"}', 400, 3,
        "business_scoped_user_id: must be two upper-case letters, a dot, then 1 to 128",
        "business_scoped_user_id", shown='{"business_scoped_user_id": "ID." + "1" × 129}'),
    Row("a `parent_business_scoped_user_id` in neither BSUID form", "POST",
        _P + '"parent_business_scoped_user_id": "ID.parent.1"}', 400, 3,
        "must be a BSUID or two upper-case letters, '.ENT.', then 1 to 128",
        "parent_business_scoped_user_id"),
    Row("`clear` with an unknown path", "POST", _P + '"clear": ["lead_score"]}', 400, 3,
        "clear", "clear"),
    Row("`clear` naming a key", "POST", _P + '"clear": ["business_scoped_user_id"]}', 400, 3,
        "clear", "clear"),
    Row("`clear` with a path also set", "POST",
        _P + '"extracted_data": {"name": "Budi"}, "clear": ["extracted_data.name"]}', 400, 3,
        "clear", "clear"),
    Row("`ChangeIdentity` to the key it already has", "POST",
        _P + '"new_contact_phone": "+6281234567890"}', 400, 3, "new_contact_phone",
        "new_contact_phone", path="/sarah/identity"),
    Row("`ChangeIdentity` of a lead no key finds", "POST",
        '{"business_scoped_user_id": "ID.404", "new_business_scoped_user_id": "ID.405"}', 404, 5,
        path="/sarah/identity"),
    Row("an unknown path", "GET", "/sarah/nope", 404, 5, "Could not resolve"),
]
# Straight to gRPC: (what, the docs' spelling, method, request, the field named or else
# a part of the message).
GRPC_ROWS = [
    ("any int32 in an enum field", "UpsertStateRequest(state=99)", "UpsertState",
     pb.UpsertStateRequest(contact_phone=PHONE, state=99), "state"),
    ("a NUL character in a text", 'ExtractedData(goals="\\0")', "UpsertState",
     pb.UpsertStateRequest(contact_phone=PHONE, extracted_data=pb.ExtractedData(goals="\0")),
     "extracted_data.goals"),
    ("`min_score` out of range", "ListLeadsRequest(min_score=101)", "ListLeads",
     pb.ListLeadsRequest(min_score=101), "min_score"),
    ("an invalid phone in a read or delete", 'DeleteStateRequest(contact_phone="08123")',
     "DeleteState", pb.DeleteStateRequest(contact_phone="08123"), "contact_phone"),
    ("a malformed BSUID in a read or delete", 'GetStateRequest(business_scoped_user_id="ID.")',
     "GetState", pb.GetStateRequest(business_scoped_user_id="ID."), "business_scoped_user_id"),
    ("`ChangeIdentity` without a new key", 'ChangeIdentityRequest(contact_phone=PHONE)',
     "ChangeIdentity", pb.ChangeIdentityRequest(contact_phone=PHONE), "new_contact_phone"),
    ("bytes that are not the method's message", r'b"\x0a\x02\xff\xfe"', "GetState",
     b"\x0a\x02\xff\xfe", "does not decode"),
]
_SHAPE_OF_PATH = {"/sarah/state": shapes.check_conversation,
                  "/sarah/leads": shapes.check_leads_page, "/sarah/stats": shapes.check_stats}


def _render(row: Row) -> str:
    example = row.shown or (row.sent.decode() if isinstance(row.sent, bytes) else row.sent)
    if row.path != "/sarah/state":
        example = f"{row.path} {example}"
    answer = "200, accepted" if row.status == 200 else f"{row.status}, code {row.code}"
    says = f"`{row.says}`" if row.says else "—"
    if row.field:
        says += f"; details name `{row.field}`"
    return f"| {row.what} | `{row.method} {example}` | {answer} | {says} |"


def _render_grpc(row: tuple) -> str:
    what, shown, method, request, named = row
    says = f"`{named}`" if isinstance(request, bytes) else f"details name `{named}`"
    return f"| {what} | `{method}({shown})` | `INVALID_ARGUMENT` | {says} |"


@pytest.mark.parametrize("row", HTTP_ROWS, ids=[r.what for r in HTTP_ROWS])
def test_bad_input_table_http_row(target: Target, row: Row) -> None:
    key = pb.GetStateRequest(contact_phone=PHONE)
    target.stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, lead_score=7), timeout=10)
    before = (target.stub.GetState(key, timeout=10), target.snapshot())
    path, body = (row.path, row.sent) if row.method == "POST" else (row.sent, None)
    status, headers, reply = target.stack.envoy.call(
        row.method, path, body.encode() if isinstance(body, str) else body)
    assert status == row.status, reply
    shape = _SHAPE_OF_PATH.get(path.split("?")[0], shapes.check_conversation)
    if not _check_http(status, headers, reply, shape, {row.status}):
        assert isinstance(reply, dict) and reply["code"] == row.code, reply
        assert row.says in reply["message"], reply
        if row.field:
            violations = reply["details"][0]["field_violations"]
            assert row.field in {v["field"] for v in violations}, reply
        else:  # refused by Envoy (or an etag mismatch): nothing to detail
            assert not reply.get("details"), reply
        assert (target.stub.GetState(key, timeout=10), target.snapshot()) == before
    elif row.keeps:
        assert reply[row.keeps] == getattr(before[0], row.keeps) == 7


@pytest.mark.parametrize("row", GRPC_ROWS, ids=[r[0] for r in GRPC_ROWS])
def test_bad_input_table_grpc_row(target: Target, row: tuple) -> None:
    _, _, method, request, named = row
    raw = isinstance(request, bytes)
    call = (target.channel.unary_unary(f"/sarah.v1.SarahService/{method}") if raw
            else getattr(target.stub, method))
    before = target.snapshot()
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    _check_grpc_error(method, caught.value, decodable=not raw)
    if raw:
        assert named in caught.value.details()
    else:
        status = rpc_status.from_call(caught.value)
        violations = error_details_pb2.BadRequest()
        assert status is not None and status.details[0].Unpack(violations)
        assert named in {v.field for v in violations.field_violations}
    assert target.snapshot() == before


def test_the_docs_bad_input_table_lists_exactly_the_rows_checked_here() -> None:
    section = docs_section("docs/api.md", "Bad input")
    rows = [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| bad input ", "| --- "))]
    assert rows == [*map(_render, HTTP_ROWS), *map(_render_grpc, GRPC_ROWS)]
