"""The two Kapso functions of kapso/functions/, run in workerd as Kapso runs them (the file,
then a module whose fetch calls handler(request, env)), called with the bodies a Kapso
function node sends, against a real server and Envoy that require API keys, on each
database; a small proxy between them fails the calls a test asks it to. What each test
asserts is what a workflow author would see: the function's answer, and the lead as
SarahService holds it afterwards."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from deploy import ROOT
from harness.envoy import EnvoyProcess
from server.app import create_server
from server.config import Config
from tests.support.faulty_proxy import Fault, FaultyProxy
from tests.support.workerd import FunctionAnswer, WorkerdHost

KAPSO_KEY = "kapso-key-0d7e"  # every workspace
TOKO_KEY = "toko-key-51aa"  # the workspace "toko" only
LOAD, SAVE = "sarah_load_state", "sarah_save_state"
_FUNCTIONS = ROOT / "kapso" / "functions"
_SHARED = "// ---- shared part:"


@pytest.fixture(scope="module")
def workerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerdHost]:
    host = WorkerdHost(tmp_path_factory.mktemp("workerd"))
    yield host
    host.stop()


class Kapso:
    """A server with API keys, Envoy, the faulty proxy in front of Envoy, and the functions
    in workerd with SARAH_URL naming the proxy."""

    def __init__(self, workerd: WorkerdHost, envoy: EnvoyProcess, proxy: FaultyProxy):
        self.workerd, self.envoy, self.proxy = workerd, envoy, proxy
        self.env: dict[str, str | None] = {"SARAH_URL": proxy.url, "SARAH_API_KEY": KAPSO_KEY}

    def load(self, body: dict[str, Any], **env: str | None) -> FunctionAnswer:
        return self.workerd.run(LOAD, {**self.env, **env}, body)

    def save(self, body: dict[str, Any], **env: str | None) -> FunctionAnswer:
        return self.workerd.run(SAVE, {**self.env, **env}, body)

    def read(self, key: str = KAPSO_KEY, **query: str) -> dict[str, Any]:
        """The lead as the service holds it, read straight from Envoy."""
        status, _, lead = self.envoy.call("GET", f"/sarah/state?{urlencode(query)}",
                                          headers={"x-api-key": key})
        assert status == 200 and isinstance(lead, dict), (status, lead)
        return lead

    def calls(self, method: str) -> list[Any]:
        return [seen for seen in self.proxy.seen if seen.method == method]


@pytest.fixture(scope="module")
def proxy() -> Iterator[FaultyProxy]:
    """One for the module: the functions' SARAH_URL, hence their workerd, stay the same from
    test to test."""
    started = FaultyProxy()
    yield started
    started.stop()


@pytest.fixture
def kapso(database_url: str, tmp_path: Path, workerd: WorkerdHost,
          proxy: FaultyProxy) -> Iterator[Kapso]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KAPSO_KEY} * kapso\n{TOKO_KEY} toko kapso-toko\n")
    server = create_server(Config(listen="127.0.0.1:0", database_url=database_url,
                                  api_keys_file=str(keys), metrics_listen="127.0.0.1:0",
                                  workers=1))
    envoy = EnvoyProcess(server.port, tmp_path)
    proxy.reset(envoy.port)
    try:
        yield Kapso(workerd, envoy, proxy)
    finally:
        envoy.stop()
        server.shutdown(grace=None)


def kapso_body(conversation: dict[str, Any] | None = None,
               context: dict[str, Any] | None = None,
               messages: list[dict[str, Any]] | None = None,
               variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body a Kapso function node sends (the contract's v1.2 shape)."""
    return {
        "execution_context": {
            "vars": variables or {},
            "system": {"trigger_type": "inbound_message", "workflow_id": "wf-sarah"},
            "context": {"channel": "whatsapp", **(context or {})},
        },
        "whatsapp_context": {"conversation": {"id": "conv-1", **(conversation or {})},
                             "messages": messages or []},
        "flow_info": {"id": "flow-sarah", "name": "Sarah", "step_id": "step-1"},
        "flow_events": [],
    }


def inbound(message_id: str, text: str = "Halo kak") -> dict[str, Any]:
    return {"id": message_id, "direction": "inbound", "message_type": "text", "content": text}


def outbound(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "direction": "outbound", "message_type": "text", "content": text}


_UPDATE = {"state": "qualifying", "lead_score": 45, "lead_temperature": "warm",
           "extracted_data": {"business_type": "restoran", "team_size": None}}
_BSUID_128 = "US." + "A1b2C3d4" * 16
_PARENT_128 = "US.ENT." + "5068472930" * 12 + "15824000"

# name: (whatsapp_context.conversation, execution_context.context,
#        the stored (contact_phone, business_scoped_user_id, parent, username))
_LEADS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, str, str, str]]] = {
    "phone only": (
        {"phone_number": "+6281211110000"},
        {"phone_number": "+6281211110000", "contact": {"wa_id": "6281211110000"}},
        ("+6281211110000", "", "", "")),
    "BSUID only, phone null": (
        {"phone_number": None, "business_scoped_user_id": "ID.4455667788990011",
         "parent_business_scoped_user_id": None, "username": None},
        {"phone_number": None, "contact": {"wa_id": None, "profile_name": "Dewi"}},
        ("", "ID.4455667788990011", "", "")),
    "both keys": (
        {"phone_number": "+6281222220000", "business_scoped_user_id": "ID.1122334455667788",
         "parent_business_scoped_user_id": "ID.ENT.88123"},
        {"phone_number": "+6281222220000", "contact": {"wa_id": "6281222220000"}},
        ("+6281222220000", "ID.1122334455667788", "ID.ENT.88123", "")),
    "wa_id without phone_number": (
        {}, {"contact": {"wa_id": "6281233330000", "profile_name": "Sari"}},
        ("+6281233330000", "", "", "")),
    "empty phones": (
        {"phone_number": "", "business_scoped_user_id": "ID.5566778899001122"},
        {"phone_number": "", "contact": {"wa_id": ""}},
        ("", "ID.5566778899001122", "", "")),
    "BSUID in execution_context.context": (
        {"phone_number": None}, {"business_scoped_user_id": "ID.6677889900112233",
                                 "contact": {"wa_id": "6281255550000"}},
        ("+6281255550000", "ID.6677889900112233", "", "")),
    "American number, its + kept": (
        {"phone_number": "+14155550123"}, {}, ("+14155550123", "", "", "")),
    "128-character BSUID, US.ENT parent": (
        {"phone_number": None, "business_scoped_user_id": _BSUID_128,
         "parent_business_scoped_user_id": _PARENT_128}, {},
        ("", _BSUID_128, _PARENT_128, "")),
    "@username": (
        {"phone_number": "+6281244440000", "username": "@tokobudi"}, {},
        ("+6281244440000", "", "", "@tokobudi")),
}


def _keys(stored: tuple[str, str, str, str]) -> dict[str, str]:
    phone, bsuid = stored[:2]
    return {"business_scoped_user_id": bsuid} if bsuid else {"contact_phone": phone}


@pytest.mark.parametrize("name", list(_LEADS))
def test_a_lead_is_loaded_saved_once_and_read_back(name: str, kapso: Kapso) -> None:
    conversation, context, stored = _LEADS[name]
    body = kapso_body(conversation, context, [inbound("wamid.LEAD1")])
    before = kapso.load(body).sarah
    assert (before["etag"], before["state"], before["message_count"]) == ("", "greeting", 0)
    body["execution_context"]["vars"] = {"sarah": before, "sarah_update": _UPDATE}
    saved = kapso.save(body).sarah
    lead = kapso.read(**_keys(stored))
    assert lead == saved
    assert (lead["contact_phone"], lead["business_scoped_user_id"],
            lead["parent_business_scoped_user_id"], lead["username"]) == stored, lead
    assert (lead["state"], lead["lead_score"], lead["lead_temperature"]) == (
        "qualifying", 45, "warm")
    assert lead["extracted_data"]["business_type"] == "restoran"
    assert lead["message_count"] == 1
    assert kapso.load(body).sarah == lead  # the next turn's load finds it
    [post] = kapso.calls("POST")
    assert post.body["request_id"] == "wamid.LEAD1" and post.body["add_messages"] == 1
    for get in kapso.calls("GET"):  # keys in the query string, the + encoded
        assert "+" not in get.path and "/sarah/state?" in get.path, get.path


def test_a_4096_character_goals_is_saved(kapso: Kapso) -> None:
    goals = ("Kami ingin pelanggan dibalas cepat. " * 120)[:4096]
    body = kapso_body({"phone_number": "+6281266660000"}, {}, [inbound("wamid.GOALS")],
                      {"sarah_update": {"extracted_data": {"goals": goals}}})
    answer = kapso.save(body)
    assert answer.status == 200, answer
    assert kapso.read(contact_phone="+6281266660000")["extracted_data"]["goals"] == goals


_FAULTS = {
    # The write lands, its answer is lost twice: the retries carry the same request_id.
    "503 after the write landed": (Fault(503, after_forwarding=True),
                                   Fault(503, after_forwarding=True)),
    "429 with retry-after 1": (Fault(429, retry_after="1"),),
    "connection closed with no answer": (Fault(0),),
}


@pytest.mark.parametrize("fault", list(_FAULTS))
def test_a_save_retried_after_a_fault_counts_once(fault: str, kapso: Kapso) -> None:
    kapso.proxy.fail_next(*_FAULTS[fault])
    body = kapso_body({"phone_number": "+6281277770000"}, {}, [inbound("wamid.RETRY")],
                      {"sarah_update": {"state": "qualifying"}})
    answer = kapso.save(body)
    assert answer.status == 200, answer
    assert answer.sarah["message_count"] == 1, answer
    assert kapso.read(contact_phone="+6281277770000")["message_count"] == 1
    posts = kapso.calls("POST")
    assert len(posts) == len(_FAULTS[fault]) + 1
    assert {post.body["request_id"] for post in posts} == {"wamid.RETRY"}
    assert answer.seconds < 5, answer
    if fault.startswith("429"):
        assert posts[1].at - posts[0].at >= 0.95, "retry-after: 1 was not honoured"
        assert answer.seconds >= 0.95, answer


def test_a_service_unavailable_for_5_seconds_is_answered_503(kapso: Kapso) -> None:
    kapso.proxy.fail_next(*[Fault(503)] * 200)
    body = kapso_body({"phone_number": "+6281288880000"}, {}, [inbound("wamid.DOWN")])
    answer = kapso.save(body)
    assert answer.status == 503, answer
    assert 4.2 <= answer.seconds <= 5.6, answer
    assert answer.body["code"] == 14 and "HTTP 503" in answer.body["message"], answer
    assert answer.body["last_status"] == 503
    assert len(kapso.calls("POST")) >= 4  # retried meanwhile
    assert kapso.read(contact_phone="+6281288880000")["etag"] == ""  # nothing stored


def test_a_retry_after_beyond_the_budget_is_answered_503_at_once(kapso: Kapso) -> None:
    kapso.proxy.fail_next(Fault(429, retry_after="30"))
    answer = kapso.load(kapso_body({"phone_number": "+6281288881111"}))
    assert answer.status == 503 and answer.seconds < 1, answer
    assert "HTTP 429" in answer.body["message"] and answer.body["last_status"] == 429, answer
    assert len(kapso.calls("GET")) == 1


def test_a_refused_save_is_answered_with_the_services_error(kapso: Kapso) -> None:
    body = kapso_body({"phone_number": "+6281299990000"}, {}, [inbound("wamid.BAD")],
                      {"sarah_update": {"state": "scoring", "lead_score": 140}})
    answer = kapso.save(body)
    assert answer.status == 400, answer
    [post] = kapso.calls("POST")  # not retried
    status, _, direct = kapso.envoy.call("POST", "/sarah/state", post.body,
                                         headers={"x-api-key": KAPSO_KEY})
    assert (answer.status, answer.body) == (status, direct)  # the service's own error
    assert [v["field"] for v in answer.body["details"][0]["field_violations"]] == ["lead_score"]
    assert kapso.read(contact_phone="+6281299990000")["etag"] == ""  # nothing written


def test_workspace_id_is_sent_when_sarah_workspace_id_is_set(kapso: Kapso) -> None:
    body = kapso_body({"phone_number": "+6281300001111"}, {}, [inbound("wamid.TOKO")],
                      {"sarah_update": {"lead_score": 12}})
    refused = kapso.load(body, SARAH_API_KEY=TOKO_KEY)  # the default workspace "" is another
    assert refused.status == 403 and refused.body["code"] == 7, refused
    toko = {"SARAH_API_KEY": TOKO_KEY, "SARAH_WORKSPACE_ID": "toko"}
    saved = kapso.save(body, **toko).sarah
    assert (saved["workspace_id"], saved["lead_score"]) == ("toko", 12)
    assert kapso.load(body, **toko).sarah == saved
    assert kapso.read(contact_phone="+6281300001111", workspace_id="toko") == saved
    assert kapso.calls("POST")[0].body["workspace_id"] == "toko"
    assert "workspace_id=toko" in kapso.calls("GET")[-1].path


def test_a_wrong_or_missing_api_key_is_answered_401(kapso: Kapso) -> None:
    body = kapso_body({"phone_number": "+6281300002222"}, {}, [inbound("wamid.KEY")])
    for key in ("not-a-key", None):
        answer = kapso.save(body, SARAH_API_KEY=key)
        assert answer.status == 401 and answer.body["code"] == 16, answer
    sent = [post.headers.get("x-api-key") for post in kapso.calls("POST")]
    assert sent == ["not-a-key", None]  # no header at all when the secret is unset
    assert kapso.read(contact_phone="+6281300002222")["etag"] == ""


def test_a_body_with_no_lead_key_is_answered_400_without_a_call(kapso: Kapso) -> None:
    body = kapso_body({"phone_number": None, "business_scoped_user_id": ""},
                      {"phone_number": "", "contact": {"wa_id": None}}, [inbound("wamid.NONE")])
    for answer in (kapso.load(body), kapso.save(body)):
        assert answer.status == 400, answer
        assert "business_scoped_user_id" in answer.body["message"], answer
    assert kapso.proxy.seen == []


def test_sarah_url_with_a_trailing_slash_unset_or_naming_something_else(kapso: Kapso) -> None:
    body = kapso_body({"phone_number": "+6281300003333"}, {}, [inbound("wamid.URL")])
    assert kapso.load(body, SARAH_URL=kapso.proxy.url + "/").status == 200
    assert kapso.calls("GET")[0].path.startswith("/sarah/state?")
    unset = kapso.load(body, SARAH_URL=None)
    assert unset.status == 503 and "SARAH_URL" in unset.body["message"], unset
    kapso.proxy.fail_next(Fault(200, after_forwarding=True))  # a 200 that is no conversation
    elsewhere = kapso.save(body)
    assert elsewhere.status == 502 and "SARAH_URL" in elsewhere.body["message"], elsewhere


def test_a_replayed_turn_counts_once(kapso: Kapso) -> None:
    """Kapso may run a turn twice (a redelivered message): the newest inbound message's id
    makes the second save a replay; an outbound message after it changes nothing."""
    history = [inbound("wamid.T1", "Halo"), outbound("wamid.B1", "Halo! Siapa nama kakak?"),
               inbound("wamid.T2", "Budi"), outbound("wamid.B2", "Salam kenal, Budi")]
    body = kapso_body({"phone_number": "+6281300004444"}, {}, history,
                      {"sarah_update": {"extracted_data": {"name": "Budi"}}})
    first, replayed = kapso.save(body).sarah, kapso.save(body).sarah
    assert first == replayed and first["message_count"] == 1
    assert [post.body["request_id"] for post in kapso.calls("POST")] == ["wamid.T2"] * 2
    body["whatsapp_context"]["messages"].append(inbound("wamid.T3", "Bisnis katering"))
    assert kapso.save(body).sarah["message_count"] == 2
    body["execution_context"]["vars"]["sarah_update"]["request_id"] = "turn-3-retry-key"
    assert kapso.save(body).sarah["message_count"] == 3  # sarah_update's request_id wins
    assert kapso.calls("POST")[-1].body["request_id"] == "turn-3-retry-key"


def test_the_two_halves_of_one_person_end_as_one_lead(kapso: Kapso) -> None:
    """Seen by phone, then by BSUID alone (the phone hidden), then with both: one lead."""
    bsuid = "ID.9988776655443322"
    halves = [({}, {"contact": {"wa_id": "6281233330000"}}),
              ({"phone_number": None, "business_scoped_user_id": bsuid}, {"phone_number": None}),
              ({"phone_number": "+6281233330000", "business_scoped_user_id": bsuid}, {})]
    for number, (conversation, context) in enumerate(halves, start=1):
        answer = kapso.save(kapso_body(conversation, context, [inbound(f"wamid.HALF{number}")]))
        assert answer.status == 200, answer
    assert (answer.sarah["contact_phone"], answer.sarah["business_scoped_user_id"],
            answer.sarah["message_count"]) == ("+6281233330000", bsuid, 3)
    status, _, page = kapso.envoy.call("GET", "/sarah/leads", headers={"x-api-key": KAPSO_KEY})
    assert status == 200 and isinstance(page, dict), page
    assert page["leads"] == [answer.sarah]


def _sarah_bot(lead: dict[str, Any], text: str) -> dict[str, Any]:
    """The Sarah bot's own step between the two functions: what it learned from `text`, the
    score that follows, and the next state; it sets the workflow variable sarah_update."""
    if lead["state"] == "greeting":
        return {"state": "qualifying", "language": "id"}
    patterns = {"name": r"nama saya (\w+)", "business_type": r"bisnis\s+(.+)",
                "team_size": r"(\d+) orang", "goals": r"ingin ([^,]+)"}
    found: dict[str, Any] = {slot: match.group(1) for slot, pattern in patterns.items()
                             if (match := re.search(pattern, text, re.IGNORECASE))}
    if "team_size" in found:
        found["team_size"] = int(found["team_size"])
    if "susah" in text:
        found["pain_points"] = [text.split("susah", 1)[1].strip()]
    known = {**{k: v for k, v in lead["extracted_data"].items() if v}, **found}
    score = (10 * ("name" in known) + 25 * ("business_type" in known)
             + 20 * (known.get("team_size", 0) >= 5) + 20 * ("goals" in known)
             + 20 * bool(known.get("pain_points")))
    update: dict[str, Any] = {"extracted_data": found, "lead_score": score,
                              "lead_temperature": "hot" if score >= 70 else
                              "warm" if score >= 40 else "cold"}
    if lead["state"] == "qualifying" and {"name", "business_type", "team_size"} <= set(known):
        update["state"] = "scoring"
    elif lead["state"] == "scoring" and score >= 70:
        update["state"] = "handoff"
    return update


def test_the_whole_sarah_conversation_through_the_two_functions(kapso: Kapso) -> None:
    """greeting → qualifying → scoring → handoff, one turn per inbound message: load, the
    bot's step, save; the workflow's variables are merged from each answer's `vars`, as the
    function node does."""
    turns = ["Halo kak", "Nama saya Budi", "Saya punya bisnis restoran padang",
             "Tim kami 8 orang", "Kami ingin lebih banyak pelanggan, susah balas chat cepat"]
    phone = "+6281300005555"
    variables: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    states = []
    for number, text in enumerate(turns, start=1):
        messages.append(inbound(f"wamid.SARAH{number}", text))
        context = {"phone_number": phone, "contact": {"wa_id": phone[1:], "profile_name": "Budi"}}
        conversation = {"phone_number": phone, "business_scoped_user_id": "ID.9080706050403020"}
        loaded = kapso.load(kapso_body(conversation, context, messages, variables))
        variables.update(loaded.body["vars"])
        variables["sarah_update"] = _sarah_bot(variables["sarah"], text)
        saved = kapso.save(kapso_body(conversation, context, messages, variables))
        variables.update(saved.body["vars"])
        states.append(variables["sarah"]["state"])
        messages.append(outbound(f"wamid.BOT{number}", "…"))
    assert states == ["qualifying", "qualifying", "qualifying", "scoring", "handoff"]
    lead = kapso.read(business_scoped_user_id="ID.9080706050403020")
    assert lead == variables["sarah"]
    assert (lead["state"], lead["lead_temperature"], lead["lead_score"]) == ("handoff", "hot", 95)
    assert lead["message_count"] == len(turns)
    assert lead["extracted_data"] == {
        "name": "Budi", "business_type": "restoran padang", "team_size": 8,
        "goals": "lebih banyak pelanggan", "pain_points": ["balas chat cepat"]}


@pytest.mark.parametrize("function", [LOAD, SAVE])
def test_each_function_is_a_plain_script_body(function: str, workerd: WorkerdHost) -> None:
    """Pasted as it is: it compiles as a classic script (no import, export or top-level
    await), defines `async function handler(request, env)`, and runs in plain Node too (no
    workerd-only global), answering a clear error when SARAH_URL is not set."""
    text = (_FUNCTIONS / f"{function}.js").read_text()
    assert not re.search(r"^\s*(import|export)\b", text, re.MULTILINE)
    checked = workerd.check(function, kapso_body({"phone_number": "+6281300006666"}))
    assert checked["handler"] == "async function handler(request, env)", checked
    assert checked["status"] == 503 and "SARAH_URL" in checked["body"]["message"], checked


def test_the_shared_part_of_the_two_files_is_identical() -> None:
    load, save = ((_FUNCTIONS / f"{name}.js").read_text() for name in (LOAD, SAVE))
    assert load.count(_SHARED) == save.count(_SHARED) == 1
    assert load[load.index(_SHARED):] == save[save.index(_SHARED):]
