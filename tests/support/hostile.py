"""Hypothesis strategies for hostile input: JSON bodies, query strings, protobuf messages, bytes.

Most of what they draw aims at one seeded lead (SEED_WORKSPACE, PHONE in its spellings),
so that a request the server rejects would show as a change to that lead if it wrote.
"""

import json
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from sarah.v1 import sarah_pb2 as pb
from tests.support.helpers import PHONE

SEED_WORKSPACE = "fuzz"
# Replaced at send time by the seeded lead's current etag, so some writes carry the right one.
SEED_ETAG = "__seed_etag__"
# Replaced at send time by a real next_page_token of `GET /sarah/leads?page_size=1`.
PAGE_TOKEN = "__page_token__"

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_EDGE_INTS = [-(2**63), INT32_MIN - 1, INT32_MIN, -1, 0, 1, 20, 45, 100, 101, 128, 129,
              200, 201, 500, 501, 1000, 1001, 1_000_000, 1_000_001, INT32_MAX, INT32_MAX + 1,
              2**63, 10**30]
_SNEAKY = ["", " ", "\x00", "a\x00b", "\u202e", "\ufeff", "😀", "\r\n", "ｈｏｔ", "HOT", "Hot",
           "hot ", "greeting\x00", "null", "true", "NaN", "-0", "0x10", "1e400", "١٢", "%00",
           "%FF", "<script>", "'; DROP TABLE conversation; --", "../../etc/passwd", "\\u0000",
           "lead_score desc", "LEAD_SCORE  DESC", "created_at asc", "Bearer x"]
_WORDS = ["greeting", "qualifying", "scoring", "handoff", "completed", "hot", "warm", "cold",
          "id", "en", "flying", "QUALIFYING", "unspecified", "STATE_UNSPECIFIED"]
PHONE_SPELLINGS = [PHONE, "6281234567890", "081234567890", "0812-3456-7890",
                   "+62 812 3456 7890", " 6281234567890", "+62+812+3456+7890"]
_BAD_PHONES = ["", " ", "+", "+0", "08123", "+14155550123", "tel:+6281234567890",
               "+6281234567890 ext. 5", "+6281234567890\x00", "٠٨١٢٣٤٥٦٧٨٩٠",
               "０８１２３４５６７８９０", "1" * 65, "+62 812 3456 7890 " * 4]
# Around the limits: username 64, request_id 128, a BSUID 131 in all, a slot 4,096.
_LONG_SIZES = [63, 64, 65, 127, 128, 129, 130, 131, 132, 4095, 4096, 4097]
# The seeded lead's BSUID, a few more well-formed ones, and malformed ones.
SEED_BSUID = "ID.1648738043044942"
_GOOD_BSUIDS = [SEED_BSUID, " ID.1648738043044942 ", "ID.2029384756102938", "US.a",
                "BR." + "9" * 128]
_BAD_BSUIDS = ["ID", "ID.", "id.123", "IDN.123", "ID.12-3", "ID.1.2", ".123", "ID .123",
               "ID.😀", "ID.123\x00", "BR." + "9" * 129, "+6281234567890", "ID.١٢٣"]
# A parent BSUID is a BSUID or its ".ENT." form, exactly (never trimmed); "" for none.
_GOOD_PARENTS = ["", "US.ENT.11815799212886844830", "ID.ENT.88123", "ID.ENT.1",
                 "US.ENT." + "Z9" * 64, SEED_BSUID, "BR." + "9" * 128]
_BAD_PARENTS = [".", "US.ENT.", "US.ENT..1", "ID.ENT.1.2", "us.ent.1", "US.ent.1", "ID.parent.1",
                "US.ENT." + "1" * 129, "BR." + "9" * 129, " ID.ENT.1", "ID.ENT.1\x00", "1" * 129]
CLEAR_PATHS = ["extracted_data.name", "extracted_data.business_type", "extracted_data.team_size",
               "extracted_data.pain_points", "extracted_data.goals", "username",
               "parent_business_scoped_user_id"]
_BAD_CLEAR = ["lead_score", "contact_phone", "business_scoped_user_id", "extracted_data",
              "extracted_data.", "EXTRACTED_DATA.NAME", "extractedData.name", ""]
# Envoy refuses a body over 1 MiB (413); one size over it, drawn rarely.
HUGE = 1_100_000

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(_SNEAKY),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀", "\x00"]),
              st.sampled_from(_LONG_SIZES)),
)
ints = st.one_of(st.integers(), st.sampled_from(_EDGE_INTS))
int32s = st.one_of(st.integers(INT32_MIN, INT32_MAX),
                   st.sampled_from([i for i in _EDGE_INTS if INT32_MIN <= i <= INT32_MAX]))
phones = st.one_of(st.sampled_from(PHONE_SPELLINGS), st.sampled_from(_BAD_PHONES), texts)
workspaces = st.one_of(st.just(SEED_WORKSPACE), st.just(""), texts)
bsuids = st.one_of(st.sampled_from(_GOOD_BSUIDS), st.sampled_from(_BAD_BSUIDS), texts)
_parents = st.one_of(st.sampled_from(_GOOD_PARENTS), st.sampled_from(_BAD_PARENTS), texts)
clear_lists = st.lists(st.one_of(st.sampled_from(CLEAR_PATHS), st.sampled_from(_BAD_CLEAR),
                                 texts), max_size=12)

# Lone surrogates only here, where they go out as JSON (invalid UTF-8 or \ud800 escapes):
# st.text() never draws them, and a protobuf message cannot carry them.
_lone_surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udbff\ud800"])
json_scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts, _lone_surrogates)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def _wrong(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly `valid`, sometimes any JSON value at all (a wrong type, null, nested junk)."""
    return st.one_of(valid, valid, json_values)


_numbers = st.one_of(ints, st.floats(), st.sampled_from(["45", "45.0", "1e2", " 45", "0x2d"]))
_words = st.one_of(st.sampled_from(_WORDS), int32s, texts)
_extracted = st.fixed_dictionaries({}, optional={
    "name": _wrong(texts), "business_type": _wrong(texts), "goals": _wrong(texts),
    "team_size": _wrong(_numbers),
    "pain_points": _wrong(st.lists(texts, max_size=22)),
    "teamSize": _wrong(_numbers), "painPoints": _wrong(st.lists(texts, max_size=3)),
    "unknown_slot": json_values,
})
_body_fields = {
    "workspace_id": _wrong(workspaces), "state": _wrong(_words),
    "lead_score": _wrong(_numbers), "lead_temperature": _wrong(_words),
    "extracted_data": _wrong(_extracted), "language": _wrong(_words),
    "message_count": _wrong(_numbers), "add_messages": _wrong(_numbers),
    "etag": _wrong(st.one_of(st.just(SEED_ETAG), texts)), "request_id": _wrong(texts),
    "leadScore": _wrong(_numbers), "contactPhone": _wrong(phones),
    "created_at": json_values, "updated_at": json_values, "lead_scroe": json_values,
    "business_scoped_user_id": _wrong(bsuids), "parent_business_scoped_user_id": _wrong(_parents),
    "username": _wrong(texts), "clear": _wrong(clear_lists),
    "businessScopedUserId": _wrong(bsuids),
}


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict:
    """A body with the contract's keys, some values right and some wrong, plus unknown keys."""
    body = {"contact_phone": draw(_wrong(phones))} if draw(st.integers(0, 9)) else {}
    body.update(draw(st.fixed_dictionaries({}, optional=_body_fields)))
    body.update(draw(st.dictionaries(texts, json_values, max_size=2)))
    return body


# Text a valid request may carry: no NUL, and no lone surrogates (category Cs), which
# protobuf cannot encode: building the request would fail in the test itself.
_clean_texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
                       max_size=20)
# What a bot takes from a lead's message: short, or as long as WhatsApp's longest text.
_slot_texts = st.one_of(_clean_texts, st.builds(lambda c: c * 4096,
                                                st.sampled_from(["x", "é", "😀"])))
_valid_body = st.fixed_dictionaries(
    {"contact_phone": st.sampled_from(PHONE_SPELLINGS), "workspace_id": st.just(SEED_WORKSPACE)},
    optional={
        "state": st.sampled_from(_WORDS[:5]), "lead_score": st.integers(0, 100),
        "lead_temperature": st.sampled_from(_WORDS[5:8]), "language": st.sampled_from(["id", "en"]),
        "add_messages": st.integers(1, 1000), "etag": st.just(SEED_ETAG),
        "request_id": _clean_texts, "extracted_data": st.fixed_dictionaries({}, optional={
            "name": _slot_texts, "business_type": _slot_texts, "goals": _slot_texts,
            "team_size": st.integers(0, 10**6), "pain_points": st.lists(_slot_texts, max_size=3)}),
        "business_scoped_user_id": st.just(SEED_BSUID), "username": _clean_texts,
        "parent_business_scoped_user_id": st.sampled_from(_GOOD_PARENTS),
        "clear": st.lists(st.sampled_from(CLEAR_PATHS[4:]), max_size=1, unique=True),
    },
)


@st.composite
def one_off_bodies(draw: st.DrawFn) -> dict:
    """A valid write to the seeded lead with one key drawn hostile: refusals right at the
    edge, and accepted writes whose answers are checked too."""
    body = draw(_valid_body)
    key = draw(st.sampled_from(["contact_phone", *sorted(_body_fields)]))
    body[key] = draw(_wrong(phones) if key == "contact_phone" else _body_fields[key])
    return body


@st.composite
def encoded_bodies(draw: st.DrawFn) -> bytes:
    """The bytes of a POST body: JSON (valid or not), truncated JSON, or raw bytes."""
    kind = draw(st.sampled_from(["near", "near", "one-off", "one-off", "any", "cut", "bytes",
                                 "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    value = {"any": json_values, "one-off": one_off_bodies()}.get(kind, near_valid_bodies())
    value = draw(value)
    if kind == "huge":
        value = {"contact_phone": PHONE, "workspace_id": SEED_WORKSPACE,
                 "extracted_data": {"goals": "x" * HUGE}}
    # NaN and Infinity come out as non-JSON tokens, lone surrogates as invalid UTF-8 or
    # as \ud800 escapes: all of them malformed input Envoy must refuse as JSON.
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    if kind == "cut":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    return raw


_identity_fields = {
    "workspace_id": _wrong(workspaces), "contact_phone": _wrong(phones),
    "business_scoped_user_id": _wrong(bsuids), "new_contact_phone": _wrong(phones),
    "new_business_scoped_user_id": _wrong(bsuids), "request_id": _wrong(texts),
    "newContactPhone": _wrong(phones),
}


@st.composite
def identity_bodies(draw: st.DrawFn) -> bytes:
    """The bytes of a POST /sarah/identity body: mostly the request's keys with values right
    or wrong (so some moves are accepted, some find nobody), sometimes any JSON or bytes."""
    kind = draw(st.sampled_from(["near", "near", "near", "any", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    value = draw(json_values if kind == "any"
                 else st.fixed_dictionaries({}, optional=_identity_fields))
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


# Zone names right, wrong in case or spelling, and paths that must not reach the disk.
_ZONES = ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura", "Asia/Kolkata", "Asia/Kathmandu",
          "America/New_York", "UTC", "Etc/GMT+5", "Asia/Atlantis", "asia/jakarta", "Asia/",
          "/Asia/Jakarta", "Asia//Jakarta", "../../etc/passwd", "zone.tab", "posixrules",
          "Asia/Jakarta\x00", "Asia", "WIB", "+07:00"]
time_zones = st.one_of(st.sampled_from(_ZONES), texts)
_QUERY_KEYS = ["contact_phone", "business_scoped_user_id", "businessScopedUserId",
               "workspace_id", "temperature", "state", "min_score",
               "order_by", "page_size", "page_token", "contactPhone", "pageSize", "utm_source",
               "leads", "deleted", "extracted_data.name", "contact_phone.x", "time_zone",
               "timeZone", "days", ""]
_query_values = st.one_of(
    phones, workspaces, bsuids, _words.map(str), time_zones,
    st.sampled_from(["lead_score desc", "created_at desc", "last_message_at%20desc", PAGE_TOKEN]),
    ints.map(str), texts,
)
_ESCAPE_BYTES = st.binary(min_size=1, max_size=8).map(lambda b: "".join(f"%{c:02X}" for c in b))


@st.composite
def _query_part(draw: st.DrawFn, text: st.SearchStrategy) -> str:
    """One key or value as it could appear in a URL: encoded one of several ways, or not."""
    value = draw(text)
    how = draw(st.sampled_from(["quote", "plus", "raw", "bytes", "broken"]))
    if how == "quote":
        return quote(value, safe="")
    if how == "plus":
        return quote_plus(value)
    if how == "bytes":  # any bytes, invalid UTF-8 included
        return draw(_ESCAPE_BYTES)
    if how == "broken":  # malformed escapes
        return quote(value, safe="") + draw(st.sampled_from(["%", "%Z1", "%F", "%%", "%0"]))
    # Unencoded: only what may stand in an HTTP request line ('+' for space, as people type).
    return "".join(ch if ch.isascii() and ch.isprintable() and ch != " " else "+"
                   for ch in value)


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """A query string: known and unknown keys, repeated ones, empty ones, stray '&' and '='."""
    keys = st.one_of(st.sampled_from(_QUERY_KEYS), texts)
    pairs = draw(st.lists(st.tuples(_query_part(keys), _query_part(_query_values)), max_size=6))
    items = [f"{k}={v}" if draw(st.integers(0, 9)) else k for k, v in pairs]
    return "&".join(items) + draw(st.sampled_from(["", "", "&", "&&", "=", "#frag"]))


def _optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


_grpc_texts = st.one_of(texts, st.sampled_from(PHONE_SPELLINGS))
_extracted_pb = st.builds(
    lambda name, business, size, points, goals: pb.ExtractedData(
        name=name, business_type=business, team_size=size, pain_points=points, goals=goals),
    _optional(_grpc_texts), _optional(_grpc_texts), _optional(int32s),
    st.lists(_grpc_texts, max_size=22), _optional(_grpc_texts),
)
_enums = st.one_of(st.integers(0, 4), int32s)  # proto3 enums are open: any int32 goes


def _message(cls: type, **fields: st.SearchStrategy) -> st.SearchStrategy:
    """`cls` with each field drawn, None meaning "not set" (so presence is exercised too)."""
    return st.fixed_dictionaries(fields).map(
        lambda drawn: cls(**{k: v for k, v in drawn.items() if v is not None}))


_upsert_fields = dict(
    contact_phone=phones, workspace_id=workspaces, state=_optional(_enums),
    lead_score=_optional(int32s), lead_temperature=_optional(_enums),
    extracted_data=_optional(_extracted_pb), language=_optional(_enums),
    message_count=_optional(int32s), add_messages=_optional(int32s),
    etag=_optional(st.one_of(st.just(SEED_ETAG), texts)), request_id=_optional(texts),
    business_scoped_user_id=_optional(bsuids), parent_business_scoped_user_id=_optional(_parents),
    username=_optional(texts), clear=_optional(clear_lists),
)
_valid_upsert = st.fixed_dictionaries({
    "contact_phone": st.sampled_from(PHONE_SPELLINGS), "workspace_id": st.just(SEED_WORKSPACE),
    "state": _optional(st.integers(0, 4)), "lead_score": _optional(st.integers(0, 100)),
    "lead_temperature": _optional(st.integers(0, 2)), "language": _optional(st.integers(0, 1)),
    "add_messages": _optional(st.integers(1, 1000)), "etag": _optional(st.just(SEED_ETAG)),
    "extracted_data": _optional(st.builds(pb.ExtractedData, name=_slot_texts,
                                          business_type=_slot_texts,
                                          team_size=st.integers(0, 10**6))),
    "parent_business_scoped_user_id": _optional(st.sampled_from(_GOOD_PARENTS)),
})


@st.composite
def _one_off_upserts(draw: st.DrawFn) -> pb.UpsertStateRequest:
    fields = draw(_valid_upsert)
    key = draw(st.sampled_from(sorted(_upsert_fields)))
    fields[key] = draw(_upsert_fields[key])
    return pb.UpsertStateRequest(**{k: v for k, v in fields.items() if v is not None})


upsert_messages = _one_off_upserts() | _message(pb.UpsertStateRequest, **_upsert_fields)
identity_messages = _message(
    pb.ChangeIdentityRequest, workspace_id=_optional(workspaces), contact_phone=_optional(phones),
    business_scoped_user_id=_optional(bsuids), new_contact_phone=_optional(phones),
    new_business_scoped_user_id=_optional(bsuids), request_id=_optional(texts))
read_messages = st.one_of(
    _message(pb.GetStateRequest, contact_phone=phones, workspace_id=workspaces,
             business_scoped_user_id=_optional(bsuids)),
    _message(pb.DeleteStateRequest, contact_phone=phones, workspace_id=workspaces,
             business_scoped_user_id=_optional(bsuids)),
    _message(pb.GetStatsRequest, workspace_id=_optional(workspaces)),
    _message(pb.ListLeadsRequest, workspace_id=_optional(workspaces),
             temperature=_optional(_enums), state=_optional(_enums),
             min_score=_optional(int32s), order_by=_optional(_words.map(str) | texts),
             page_size=_optional(int32s), page_token=_optional(texts)),
    _message(pb.ListEventsRequest, contact_phone=_optional(phones),
             workspace_id=_optional(workspaces), business_scoped_user_id=_optional(bsuids),
             page_size=_optional(int32s), page_token=_optional(texts)),
    _message(pb.GetActivityRequest, workspace_id=_optional(workspaces),
             time_zone=_optional(time_zones), days=_optional(int32s)),
)
METHOD_OF = {
    pb.GetStateRequest: "GetState", pb.DeleteStateRequest: "DeleteState",
    pb.GetStatsRequest: "GetStats", pb.ListLeadsRequest: "ListLeads",
    pb.UpsertStateRequest: "UpsertState", pb.ChangeIdentityRequest: "ChangeIdentity",
    pb.ListEventsRequest: "ListEvents", pb.GetActivityRequest: "GetActivity",
}


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """(method, bytes): random bytes, or a real request's bytes cut, flipped or extended
    with a field of any number and wire type (varints up to ten bytes, huge lengths)."""
    method = draw(st.sampled_from(sorted(METHOD_OF.values())))
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "extended"]))
    if kind == "random":
        return method, draw(st.binary(max_size=64))
    message = draw({"UpsertState": upsert_messages, "ChangeIdentity": identity_messages}.get(
        method, read_messages))
    raw = bytearray(message.SerializeToString())
    if kind == "extended":
        tag = draw(st.integers(0, 2**32)) << 3 | draw(st.integers(0, 7))
        raw += _varint(tag) + _varint(draw(st.integers(0, 2**64 - 1)))
        raw += draw(st.binary(max_size=16))
    elif raw:
        at = draw(st.integers(0, len(raw) - 1))
        edit = draw(st.sampled_from(["cut", "flip", "insert"]))
        if edit == "cut":
            del raw[at:]
        elif edit == "flip":
            raw[at] ^= draw(st.integers(1, 255))
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return method, bytes(raw)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
