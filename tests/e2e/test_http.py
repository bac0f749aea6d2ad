"""End to end through the real Envoy: the contract's HTTP bindings, JSON words and errors."""

import itertools
import json

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support import contract_shapes as shapes
from tests.support.helpers import KAPSO_BODY, PHONE
from tests.support.stack import Stack

_workspaces = itertools.count()


@pytest.fixture
def ws() -> str:
    """A workspace of the test's own, so tests sharing one database never see each other."""
    return f"http-{next(_workspaces)}"


def _post(stack: Stack, body: object):
    return stack.envoy.call("POST", "/sarah/state", body)


def test_kapso_body_round_trips_flat_in_the_same_words(stack: Stack, ws: str) -> None:
    status, headers, stored = _post(stack, {**KAPSO_BODY, "workspace_id": ws})
    assert status == 200 and headers["content-type"].startswith("application/json")
    for key, value in KAPSO_BODY.items():
        if key != "extracted_data":
            assert stored[key] == value, key
    assert stored["extracted_data"] == {**KAPSO_BODY["extracted_data"], "pain_points": []}
    assert stored["created_at"].endswith("Z") and stored["etag"]
    status, _, read = stack.envoy.call("GET", f"/sarah/state?contact_phone=%2B6281234567890"
                                               f"&workspace_id={ws}")
    assert status == 200 and read == stored


@pytest.mark.parametrize(
    "query",
    [
        "contact_phone=+6281234567890",  # hand-written, unencoded '+'
        "contact_phone=%2B6281234567890",
        "contact_phone=6281234567890",  # WhatsApp's wa_id
        "contact_phone=081234567890",
        "contact_phone=0812-3456-7890",
        "contact_phone=%2B62+812+3456+7890",  # form-encoded spaces
        "contact_phone=%2B62%20812%203456%207890",
    ],
)
def test_every_query_spelling_finds_the_lead(stack: Stack, ws: str, query: str) -> None:
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "lead_score": 61})
    status, _, lead = stack.envoy.call("GET", f"/sarah/state?{query}&workspace_id={ws}")
    assert status == 200, lead
    assert (lead["contact_phone"], lead["lead_score"]) == (PHONE, 61)


def test_unencoded_american_number_stays_american(stack: Stack, ws: str) -> None:
    _post(stack, {"contact_phone": "+14155550123", "workspace_id": ws, "lead_score": 7})
    status, _, lead = stack.envoy.call(
        "GET", f"/sarah/state?contact_phone=+14155550123&workspace_id={ws}")
    assert status == 200 and (lead["contact_phone"], lead["lead_score"]) == ("+14155550123", 7)


def test_unknown_lead_gets_the_default_with_zeros_printed(stack: Stack, ws: str) -> None:
    status, _, lead = stack.envoy.call(
        "GET", f"/sarah/state?contact_phone=0812-3456-7890&workspace_id={ws}")
    assert status == 200
    assert lead == {
        "contact_phone": PHONE, "workspace_id": ws, "state": "greeting", "lead_score": 0,
        "lead_temperature": "cold", "extracted_data": {"pain_points": []}, "language": "id",
        "message_count": 0, "etag": "",
        # v1.1 adds the new keys to every response, "" when unknown.
        "business_scoped_user_id": "", "parent_business_scoped_user_id": "", "username": "",
    }


def test_partial_update_and_null_keep_stored_slots(stack: Stack, ws: str) -> None:
    _post(stack, {**KAPSO_BODY, "workspace_id": ws})
    status, _, lead = _post(stack, {"contact_phone": "6281234567890", "workspace_id": ws,
                                    "extracted_data": {"team_size": None, "goals": "grow"},
                                    "lead_score": None, "add_messages": 1})
    assert status == 200
    assert lead["extracted_data"] == {"name": "Budi", "business_type": "restaurant",
                                      "team_size": 5, "goals": "grow", "pain_points": []}
    assert (lead["lead_score"], lead["message_count"]) == (45, 4)


def test_lower_camel_case_keys_are_accepted(stack: Stack, ws: str) -> None:
    status, _, lead = _post(stack, {"contactPhone": PHONE, "workspaceId": ws, "leadScore": 12,
                                    "leadTemperature": "hot"})
    assert status == 200 and (lead["lead_score"], lead["lead_temperature"]) == (12, "hot")


def test_unknown_query_parameters_and_body_keys_are_ignored(stack: Stack, ws: str) -> None:
    status, _, _ = stack.envoy.call(
        "GET", f"/sarah/state?contact_phone={PHONE}&workspace_id={ws}&utm_source=wa&fbclid=x")
    assert status == 200
    status, _, lead = _post(stack, {"contact_phone": PHONE, "workspace_id": ws,
                                    "lead_scroe": 99})  # misspelt: silently dropped
    assert status == 200 and lead["lead_score"] == 0


def test_invalid_fields_are_400_with_bad_request_details(stack: Stack, ws: str) -> None:
    status, _, error = _post(stack, {"contact_phone": "08123", "workspace_id": ws,
                                     "lead_score": 150})
    assert status == 400 and error["code"] == 3
    assert "contact_phone" in error["message"]
    violations = error["details"][0]["field_violations"]
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert {v["field"] for v in violations} == {"contact_phone", "lead_score"}
    status, _, lead = stack.envoy.call("GET", f"/sarah/state?contact_phone={PHONE}"
                                               f"&workspace_id={ws}")
    assert lead["etag"] == ""  # nothing was written


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"contact_phone": "+6281234567890", "lead_score": ', ""),  # malformed JSON
        ('{"contact_phone": "+6281234567890", "lead_score": "high"}', "lead_score"),
        ('{"contact_phone": "+6281234567890", "state": "flying"}', "state"),
        ('{"contact_phone": "+6281234567890", "extracted_data": {"team_size": "5 people"}}',
         "team_size"),
    ],
)
def test_envoy_rejects_bad_json_as_json_400(stack: Stack, body: str, named: str) -> None:
    status, headers, error = stack.envoy.call("POST", "/sarah/state", body)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert error["code"] == 3 and named in error["message"]


def test_unknown_enum_word_in_query_is_400(stack: Stack) -> None:
    status, _, error = stack.envoy.call("GET", "/sarah/leads?temperature=boiling")
    assert status == 400 and error["code"] == 3 and "temperature" in error["message"]


# `GET /` is the dashboard page (tests/e2e/test_dashboard.py); a page's other usual name is not.
@pytest.mark.parametrize("path", ["/nope", "/index.html", "/sarah/nope", "/sarah/state/extra"])
def test_unknown_path_is_json_404(stack: Stack, path: str) -> None:
    status, _, error = stack.envoy.call("GET", path)
    assert status == 404 and error["code"] == 5 and error["message"]


def test_etag_mismatch_is_409(stack: Stack, ws: str) -> None:
    _, _, first = _post(stack, {"contact_phone": PHONE, "workspace_id": ws})
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "lead_score": 5,
                  "etag": first["etag"]})
    status, _, error = _post(stack, {"contact_phone": PHONE, "workspace_id": ws,
                                     "lead_score": 6, "etag": first["etag"]})
    assert status == 409 and error["code"] == 10 and "etag" in error["message"]


def test_body_over_one_mebibyte_is_413(stack: Stack, ws: str) -> None:
    body = json.dumps({"contact_phone": PHONE, "workspace_id": ws,
                       "extracted_data": {"goals": "x" * (2 << 20)}})
    status, _, error = stack.envoy.call("POST", "/sarah/state", body)
    assert status == 413 and error["code"] == 8 and error["message"]
    _, _, lead = stack.envoy.call("GET", f"/sarah/state?contact_phone={PHONE}&workspace_id={ws}")
    assert lead["etag"] == ""


def test_add_messages_and_request_id_over_http(stack: Stack, ws: str) -> None:
    body = {"contact_phone": PHONE, "workspace_id": ws, "add_messages": 1,
            "request_id": "wamid.HBgN"}
    first = _post(stack, body)[2]
    again = _post(stack, body)[2]
    assert first == again and again["message_count"] == 1
    status, _, error = _post(stack, {**body, "request_id": "", "message_count": 2})
    assert status == 400 and {v["field"] for v in error["details"][0]["field_violations"]} == {
        "add_messages"}


def test_leads_pages_and_stats_through_http(stack: Stack, ws: str) -> None:
    for i, (score, temp) in enumerate([(90, "hot"), (60, "warm"), (30, "warm"), (10, "cold")]):
        _post(stack, {"contact_phone": f"+6281234567{i:03d}", "workspace_id": ws,
                      "lead_score": score, "lead_temperature": temp, "state": "qualifying"})
    status, _, page = stack.envoy.call("GET", f"/sarah/leads?workspace_id={ws}&page_size=3")
    assert status == 200 and [c["lead_score"] for c in page["leads"]] == [90, 60, 30]
    status, _, rest = stack.envoy.call(
        "GET", f"/sarah/leads?workspace_id={ws}&page_size=3&page_token={page['next_page_token']}")
    assert [c["lead_score"] for c in rest["leads"]] == [10] and rest["next_page_token"] == ""
    _, _, warm = stack.envoy.call(
        "GET", f"/sarah/leads?workspace_id={ws}&temperature=warm&min_score=50")
    assert [c["lead_score"] for c in warm["leads"]] == [60]
    status, _, stats = stack.envoy.call("GET", f"/sarah/stats?workspace_id={ws}")
    assert status == 200
    assert int(stats.pop("revision")) >= 4  # the module's writes so far, a JSON string
    assert stats == {"total": 4, "hot": 1, "warm": 2, "cold": 1, "avg_score": 47.5,
                     "by_state": {"greeting": 0, "qualifying": 4, "scoring": 0,
                                  "handoff": 0, "completed": 0}}


def test_bad_page_token_is_400(stack: Stack) -> None:
    status, _, error = stack.envoy.call("GET", "/sarah/leads?page_token=garbage")
    assert status == 400 and error["details"][0]["field_violations"][0]["field"] == "page_token"


def test_delete_erases_the_lead(stack: Stack, ws: str) -> None:
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "lead_score": 80})
    status, _, reply = stack.envoy.call(
        "DELETE", f"/sarah/state?contact_phone=0812-3456-7890&workspace_id={ws}")
    assert status == 200 and reply == {"deleted": True}
    _, _, again = stack.envoy.call("DELETE", f"/sarah/state?contact_phone={PHONE}"
                                             f"&workspace_id={ws}")
    assert again == {"deleted": False}
    _, _, lead = stack.envoy.call("GET", f"/sarah/state?contact_phone={PHONE}&workspace_id={ws}")
    assert lead["etag"] == "" and lead["lead_score"] == 0


def test_native_grpc_passes_through_envoy(stack: Stack, ws: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.envoy.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        lead = stub.UpsertState(pb.UpsertStateRequest(contact_phone="0812-3456-7890",
                                                      workspace_id=ws, lead_score=3), timeout=10)
        assert lead.contact_phone == PHONE
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetState(pb.GetStateRequest(contact_phone="08123"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stopped_server_is_json_503_and_recovers(stack: Stack, ws: str) -> None:
    path = f"/sarah/state?contact_phone={PHONE}&workspace_id={ws}"
    stack.stop_server()
    try:
        status, headers, error = stack.envoy.call("GET", path)
        assert status == 503 and headers["content-type"].startswith("application/json")
        assert error["code"] == 14 and error["message"]
    finally:
        stack.start_server()
    stack.wait_until(lambda: stack.envoy.call("GET", path)[0] == 200)


def test_health_check_takes_a_draining_server_out_within_seconds(stack: Stack, ws: str) -> None:
    from grpc_health.v1 import health_pb2

    path = f"/sarah/stats?workspace_id={ws}"
    assert stack.server is not None
    stack.server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        stack.wait_until(lambda: stack.envoy.call("GET", path)[0] == 503, timeout=5)
        status, _, error = stack.envoy.call("GET", path)
        assert status == 503 and error["code"] == 14
    finally:
        stack.server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    stack.wait_until(lambda: stack.envoy.call("GET", path)[0] == 200, timeout=5)


_BSUID = "ID.1648738043044942"


def test_a_bsuid_only_lead_is_written_and_read_over_http(stack: Stack, ws: str) -> None:
    status, _, stored = _post(stack, {"business_scoped_user_id": _BSUID, "workspace_id": ws,
                                      "username": "budi", "contact_phone": None,
                                      "lead_score": 30})
    assert status == 200, stored
    assert (stored["contact_phone"], stored["business_scoped_user_id"], stored["username"]) == (
        "", _BSUID, "budi")
    assert stored["parent_business_scoped_user_id"] == ""
    status, _, read = stack.envoy.call(
        "GET", f"/sarah/state?business_scoped_user_id={_BSUID}&workspace_id={ws}")
    assert status == 200 and read == stored


def test_a_long_message_and_the_longest_bsuids_are_stored_over_http(
        stack: Stack, ws: str) -> None:
    """What a bot takes from one long WhatsApp message fits (the 294-character
    business_type of issue 20 once got 400), and so do Meta's longest BSUIDs."""
    bsuid, parent = "US." + "13491208655302741918" * 6 + "abcdefgh", "US.ENT." + "5" * 128
    business = ("warung makan padang dan katering untuk kantor di Bekasi, " * 6)[:300]
    goals = ("omzet naik, ongkir turun, pelanggan kembali setiap minggu. " * 70)[:4096]
    assert (len(bsuid), len(parent), len(business), len(goals)) == (131, 135, 300, 4096)
    status, _, stored = _post(stack, {
        "business_scoped_user_id": bsuid, "parent_business_scoped_user_id": parent,
        "username": "@tokobudi", "workspace_id": ws, "contact_phone": None,
        "extracted_data": {"business_type": business, "goals": goals,
                           "pain_points": [business, goals]}})
    assert status == 200, stored
    shapes.check_conversation(stored)
    assert (stored["business_scoped_user_id"], stored["parent_business_scoped_user_id"],
            stored["username"]) == (bsuid, parent, "@tokobudi")
    assert stored["extracted_data"] == {"business_type": business, "goals": goals,
                                        "pain_points": [business, goals]}
    status, _, read = stack.envoy.call(
        "GET", f"/sarah/state?business_scoped_user_id={bsuid}&workspace_id={ws}")
    assert status == 200 and read == stored
    status, _, page = stack.envoy.call(
        "GET", f"/sarah/history?business_scoped_user_id={bsuid}&workspace_id={ws}")
    assert status == 200 and [e["conversation"] for e in page["events"]] == [stored]
    status, _, refused = _post(stack, {
        "business_scoped_user_id": bsuid, "workspace_id": ws,
        "extracted_data": {"business_type": business + "x" * 3797}})
    assert status == 400 and refused["message"] == (
        "invalid request: extracted_data.business_type: must be at most 4096 characters, "
        "got 4097"), refused
    status, _, refused = _post(stack, {"business_scoped_user_id": bsuid + "9",
                                       "workspace_id": ws})
    assert status == 400 and "then 1 to 128 letters and digits" in refused["message"], refused


def test_identity_change_over_http_is_200_then_404_for_an_unknown_lead(
        stack: Stack, ws: str) -> None:
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "lead_score": 61})
    status, _, moved = stack.envoy.call("POST", "/sarah/identity", {
        "workspace_id": ws, "contact_phone": PHONE, "new_business_scoped_user_id": _BSUID})
    assert status == 200, moved
    assert (moved["contact_phone"], moved["business_scoped_user_id"], moved["lead_score"]) == (
        PHONE, _BSUID, 61)
    status, _, missing = stack.envoy.call("POST", "/sarah/identity", {
        "workspace_id": ws, "contact_phone": "+6281200000001",
        "new_contact_phone": "+6281200000002"})
    assert status == 404, missing


def test_clear_over_http_resets_the_named_slots(stack: Stack, ws: str) -> None:
    _post(stack, {**KAPSO_BODY, "workspace_id": ws,
                  "extracted_data": {"name": "Budi", "team_size": 5, "pain_points": ["a"]}})
    status, _, cleared = _post(stack, {"contact_phone": PHONE, "workspace_id": ws,
                                       "clear": ["extracted_data.team_size",
                                                 "extracted_data.pain_points"]})
    assert status == 200, cleared
    assert cleared["extracted_data"] == {"name": "Budi", "pain_points": []}
    status, _, refused = _post(stack, {"contact_phone": PHONE, "workspace_id": ws,
                                       "clear": ["contact_phone"]})
    assert status == 400 and "clear" in json.dumps(refused)


def test_history_and_activity_through_envoy_in_the_contracts_words(stack: Stack, ws: str) -> None:
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "message_count": 2})
    _post(stack, {"contact_phone": PHONE, "workspace_id": ws, "state": "handoff",
                  "lead_temperature": "hot"})
    status, _, page = stack.envoy.call(
        "GET", f"/sarah/history?contact_phone=6281234567890&workspace_id={ws}&page_size=1")
    assert status == 200, page
    shapes.check_events_page(page)
    [newest] = page["events"]
    assert (newest["kind"], newest["changed"]) == ("upserted", ["state", "lead_temperature"])
    assert isinstance(newest["revision"], str)  # 64-bit: a JSON string
    assert newest["conversation"]["state"] == "handoff"  # enums as their words
    status, _, rest = stack.envoy.call(
        "GET", f"/sarah/history?contact_phone=%2B6281234567890&workspace_id={ws}"
               f"&page_token={page['next_page_token']}")
    assert status == 200 and [e["changed"] for e in rest["events"]] == [
        ["contact_phone", "message_count", "last_message_at"]], rest
    status, _, activity = stack.envoy.call(
        "GET", f"/sarah/activity?time_zone=Asia/Kolkata&days=2&workspace_id={ws}")
    assert status == 200, activity
    shapes.check_activity(activity)
    assert activity["time_zone"] == "Asia/Kolkata" and len(activity["days"]) == 2
    totals = {key: sum(day[key] for day in activity["days"]) for key in activity["days"][0]
              if key != "date"}
    assert totals == {"new_leads": 1, "messages": 2, "reached_handoff": 1,
                      "reached_completed": 0, "became_hot": 1}
    status, _, error = stack.envoy.call("GET", "/sarah/activity?time_zone=Mars/Olympus")
    assert (status, error["code"]) == (400, 3), error
    assert "time_zone" in {v["field"] for v in error["details"][0]["field_violations"]}
