"""The dashboard page (dashboard/index.html) in a real browser: headless Chromium opens `/`
of a real Envoy in front of a real server, on each database, and the page lists, counts and
follows every change as it commits -- through a server restart, and behind API keys.

One browser for the module, its tab reused: each test opens the page afresh on a workspace
of its own (`#workspace=...`, the page's filter), so tests sharing the stack keep apart.
The browser's time zone is Asia/Makassar (WITA), so "the browser's zone" is not the
server's default, Asia/Jakarta.
"""

import base64
import datetime
import itertools
import json
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy import ROOT
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.browser import Browser
from tests.support.stack import Stack

PAGE = ROOT / "dashboard" / "index.html"
ZONE = "Asia/Makassar"
_workspaces = itertools.count()
_phones = itertools.count(1)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    started = Browser(tmp_path_factory.mktemp("dashboard-chromium"))
    started.watch_console()
    started.call("Network.enable")  # to read which URLs the page requested
    started.call("Emulation.setTimezoneOverride", timezoneId=ZONE)
    yield started
    started.close()


@pytest.fixture
def workspace() -> str:
    return f"dash-{next(_workspaces)}"


def _phone() -> str:
    return f"+62812777{next(_phones):05d}"


def _write(stack: Stack, workspace: str, phone: str, **fields: object) -> dict[str, Any]:
    """One UpsertState over HTTP through Envoy, as Kapso writes."""
    status, _, lead = stack.envoy.call("POST", "/sarah/state", {
        "contact_phone": phone, "workspace_id": workspace, **fields})
    assert status == 200 and isinstance(lead, dict), lead
    return lead


def _erase(stack: Stack, workspace: str, phone: str) -> None:
    status, _, reply = stack.envoy.call(
        "DELETE", f"/sarah/state?contact_phone=%2B{phone[1:]}&workspace_id={workspace}")
    assert status == 200 and reply == {"deleted": True}, reply


class Page:
    """The dashboard in the module's tab, read back through the DOM."""

    def __init__(self, browser: Browser, stack: Stack):
        self.browser, self.stack = browser, stack
        self.since = browser.event_count()

    def open(self, fragment: str) -> "Page":
        """A fresh load of `/#fragment` (about:blank first: a new fragment alone would not
        reload the page); its console errors are counted from here."""
        self.browser.call("Page.navigate", url="about:blank")
        self.since = self.browser.event_count()
        self.browser.call("Page.navigate",
                          url=f"http://127.0.0.1:{self.stack.envoy.port}/#{fragment}")
        wait_until(lambda: self.evaluate("document.readyState") == "complete"
                   and self.evaluate("location.pathname") == "/", 20, "the page to load")
        return self

    def evaluate(self, expression: str) -> Any:
        return self.browser.evaluate(expression)

    def rows(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.evaluate(
            "Array.from(document.querySelectorAll('#rows tr'), row => ({"
            "phone: row.dataset.phone, score: Number(row.dataset.score),"
            "text: row.textContent}))")
        return found

    def phones(self) -> list[str]:
        return [row["phone"] for row in self.rows()]

    def stat(self, name: str) -> str:
        text: str = self.evaluate(f"document.getElementById('stat-{name}').textContent")
        return text

    def connection(self) -> str:
        state: str = self.evaluate("document.body.dataset.connection")
        return state

    def shown(self, element_id: str) -> bool:
        return bool(self.evaluate(f"!document.getElementById('{element_id}').hidden"))

    def wait(self, condition: Any, what: str, timeout: float = 10) -> None:
        """Until `condition` holds, polled every 20 ms; failing, with what the page says."""
        try:
            wait_until(condition, timeout, what, interval=0.02)
        except TimeoutError as late:
            said = self.evaluate("['connection', 'notice', 'rows'].map("
                                 "id => document.getElementById(id).textContent)")
            raise AssertionError(f"{late}; the page says {said}; errors: {self.errors()}"
                                 ) from None

    def errors(self, *, network: bool = True) -> list[str]:
        return self.browser.console_errors(self.since, network=network)

    def type_key(self, key: str) -> None:
        """The key typed into the page's key form and submitted, as a person would."""
        self.evaluate(f"document.getElementById('key-input').value = {json.dumps(key)};"
                      "document.getElementById('key-form').requestSubmit(); true")


@pytest.fixture
def page(chromium: Browser, stack: Stack) -> Page:
    return Page(chromium, stack)


def test_root_serves_the_page_and_every_other_path_stays_a_json_404(stack: Stack) -> None:
    status, headers, body = stack.envoy.call("GET", "/", headers={"content-type": None})
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == PAGE.read_text()
    assert "connect-src 'self'" in headers["content-security-policy"]
    status, headers, body = stack.envoy.call("HEAD", "/", headers={"content-type": None})
    assert (status, headers["content-type"], body) == (200, "text/html; charset=utf-8", None)
    assert int(headers["content-length"]) == len(PAGE.read_bytes())
    for method, path in [("POST", "/"), ("GET", "/index.html"), ("GET", "/favicon.ico")]:
        status, headers, error = stack.envoy.call(method, path)
        assert status == 404 and headers["content-type"] == "application/json", (path, error)
        assert isinstance(error, dict) and error["code"] == 5


def test_page_lists_at_once_with_statistics_and_local_activity_and_no_console_error(
        page: Page, workspace: str) -> None:
    first, second = _phone(), _phone()
    _write(page.stack, workspace, first, lead_score=80, lead_temperature="hot",
           extracted_data={"name": "Budi"}, message_count=3)
    _write(page.stack, workspace, second, lead_score=30, lead_temperature="cold")
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [first, second], "the two leads, hottest first", 5)
    page.wait(lambda: (page.stat("total"), page.stat("hot"), page.stat("cold"))
              == ("2", "1", "1"), "the statistics")
    assert "Budi" in page.rows()[0]["text"]
    assert not page.shown("key-panel")  # no keys configured: never asked for one
    # The last 30 days in the browser's zone, ending today there, today's bar the two leads.
    page.wait(lambda: page.evaluate("document.querySelectorAll('#chart rect').length") == 30,
              "30 days of activity")
    assert page.evaluate("document.getElementById('zone').textContent") == ZONE
    today = datetime.datetime.now(zoneinfo.ZoneInfo(ZONE)).date().isoformat()
    bar = page.evaluate("(r => [r.dataset.date, r.dataset.value])"
                        "(document.querySelector('#chart rect:last-of-type'))")
    assert bar == [today, "2"]
    assert page.errors() == []


def test_page_is_live_within_a_second_of_opening(page: Page, workspace: str) -> None:
    """Nothing to send yet: the watch's 200 must still arrive at once (contract v1.2, "Live
    changes, sharpened"), before the first event or heartbeat. It needs the server to send
    the stream's headers when it starts (issue 22): until it does, the 200 comes with the
    first heartbeat, 15 s later, and this test fails."""
    _write(page.stack, workspace, _phone())
    page.open(f"workspace={workspace}")
    page.wait(lambda: len(page.rows()) == 1, "the lead")
    page.wait(lambda: page.connection() == "live", "the page to say it is live", 1.0)


def test_leaving_the_page_ends_its_watch_and_coming_back_resumes_it(
        page: Page, workspace: str) -> None:
    """Left into the back/forward cache, a page with its watch open would hold one of the
    browser's six connections to the host: seven such visits, and the dashboard stalls."""
    envoy = page.stack.envoy
    first, meanwhile = _phone(), _phone()
    _write(page.stack, workspace, first)
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [first], "the lead")
    page.wait(lambda: envoy.stat("http.sarah_ingress.downstream_rq_active") == 1, "the watch")
    page.browser.call("Page.navigate", url="about:blank")
    page.wait(lambda: envoy.stat("http.sarah_ingress.downstream_rq_active") == 0,
              "the watch to end with the page")
    _write(page.stack, workspace, meanwhile, lead_score=5)
    entries = page.browser.call("Page.getNavigationHistory")["entries"]
    page.browser.call("Page.navigateToHistoryEntry", entryId=entries[-2]["id"])
    page.wait(lambda: page.phones() == [meanwhile, first], "the change made while away")
    assert page.errors() == []


def test_a_write_over_http_shows_in_the_list_and_statistics_within_a_second(
        page: Page, workspace: str) -> None:
    old, new = _phone(), _phone()
    _write(page.stack, workspace, old, lead_score=40, lead_temperature="warm")
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [old] and page.stat("total") == "1", "the first lead")

    _write(page.stack, workspace, new, lead_score=90, lead_temperature="hot")
    page.wait(lambda: page.phones() == [new, old]
              and (page.stat("total"), page.stat("hot")) == ("2", "1"),
              "the new lead, first, and counted", 1.0)
    # A change moves its row in place: the old lead, now hotter, goes first.
    _write(page.stack, workspace, old, lead_score=95)
    page.wait(lambda: page.phones() == [old, new] and page.rows()[0]["score"] == 95,
              "the changed lead, moved up", 1.0)
    assert page.errors() == []


def test_events_keep_to_the_filters_and_the_pages_loaded(page: Page, workspace: str) -> None:
    hot = {score: _phone() for score in (90, 80, 70)}
    for score, phone in hot.items():
        _write(page.stack, workspace, phone, lead_score=score, lead_temperature="hot")
    _write(page.stack, workspace, _phone(), lead_score=99, lead_temperature="warm")
    page.open(f"workspace={workspace}&temperature=hot&size=2")
    page.wait(lambda: page.phones() == [hot[90], hot[80]], "the first page of hot leads")
    assert page.shown("next-page")

    top, past_the_page, warm = _phone(), _phone(), _phone()
    _write(page.stack, workspace, past_the_page, lead_score=75, lead_temperature="hot")
    _write(page.stack, workspace, warm, lead_score=98, lead_temperature="warm")
    _write(page.stack, workspace, top, lead_score=95, lead_temperature="hot")
    # The 95 comes in at the top; the 75 sorts past the page loaded and waits for the next
    # page; the warm one is filtered out.
    page.wait(lambda: page.phones() == [top, hot[90], hot[80]], "the new hot lead on top", 1.0)
    page.evaluate("document.getElementById('next-page').click()")
    page.wait(lambda: page.phones() == [top, hot[90], hot[80], past_the_page, hot[70]],
              "the next page, nothing twice")
    _write(page.stack, workspace, top, lead_temperature="warm")  # no longer matches
    page.wait(lambda: top not in page.phones(), "the cooled lead to leave the list", 1.0)
    assert page.errors() == []


def test_a_changed_phone_number_moves_the_row_to_the_new_key(page: Page, workspace: str) -> None:
    """The event names the lead by its new key only: the row under the old one must go."""
    old, new, other = _phone(), _phone(), _phone()
    _write(page.stack, workspace, old, lead_score=60)
    _write(page.stack, workspace, other, lead_score=10)
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [old, other], "both leads")
    status, _, moved = page.stack.envoy.call("POST", "/sarah/identity", {
        "workspace_id": workspace, "contact_phone": old, "new_contact_phone": new})
    assert status == 200, moved
    page.wait(lambda: page.phones() == [new, other] and page.stat("total") == "2",
              "the lead under its new number, once", 1.0)
    assert page.errors() == []


def test_find_a_lead_by_phone_number_or_bsuid(page: Page, workspace: str) -> None:
    phone, bsuid = _phone(), f"ID.{next(_phones):016d}"
    _write(page.stack, workspace, phone, lead_score=45, lead_temperature="warm",
           extracted_data={"name": "Sari"})
    status, _, lead = page.stack.envoy.call("POST", "/sarah/state", {
        "business_scoped_user_id": bsuid, "workspace_id": workspace, "username": "@tokodewi"})
    assert status == 200, lead
    page.open(f"workspace={workspace}&temperature=hot")  # neither is listed
    page.wait(lambda: page.evaluate("document.body.dataset.revision") is not None, "the list")
    assert page.rows() == []

    def find(text: str, shows: list[str]) -> None:
        page.evaluate(f"document.getElementById('find-input').value = {json.dumps(text)};"
                      "document.getElementById('find-form').requestSubmit(); true")
        page.wait(lambda: page.shown("detail") and not page.shown("detail-note") and all(
            shown in page.evaluate("document.getElementById('detail-fields').textContent")
            for shown in shows), f"the panel of the lead found by {text}")

    spaced = f"{phone[:3]} {phone[3:6]} {phone[6:10]} {phone[10:]}"  # as a person types it
    find(spaced, ["Sari", phone, "warm"])
    find(bsuid, ["@tokodewi", bsuid])
    assert page.errors() == []


def test_an_erased_lead_disappears_and_its_history_keeps_only_the_erasure(
        page: Page, workspace: str) -> None:
    kept, erased = _phone(), _phone()
    _write(page.stack, workspace, kept, lead_score=10)
    _write(page.stack, workspace, erased, lead_score=20, state="qualifying")
    _write(page.stack, workspace, erased, state="handoff", lead_temperature="hot")
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [erased, kept], "both leads")
    # One lead's history, on click: its two writes, newest first, naming what changed.
    page.evaluate("document.querySelector('#rows tr').click()")
    page.wait(lambda: page.evaluate("document.querySelectorAll('#history li').length") == 2,
              "the lead's two changes")
    newest = page.evaluate("document.querySelector('#history li').textContent")
    assert "state: handoff" in newest and "lead_temperature: hot" in newest

    _erase(page.stack, workspace, erased)
    page.wait(lambda: page.phones() == [kept] and page.stat("total") == "1",
              "the erased lead gone from the list and the count", 1.0)
    page.wait(lambda: page.evaluate(
        "Array.from(document.querySelectorAll('#history li'), item => item.className)")
        == ["deleted"], "the open history to hold only the erasure")
    assert page.shown("detail-note")  # "No stored lead has this key"
    assert page.errors() == []


def _grpc_write(stack: Stack, workspace: str, phone: str, score: int) -> None:
    """A write straight to the server, before Envoy has even seen it is back."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        sarah_pb2_grpc.SarahServiceStub(channel).UpsertState(
            pb.UpsertStateRequest(contact_phone=phone, workspace_id=workspace, lead_score=score),
            timeout=10)


def test_a_server_restart_is_survived_without_a_missed_event(page: Page, workspace: str) -> None:
    first = _phone()
    _write(page.stack, workspace, first, lead_score=1)
    page.open(f"workspace={workspace}")
    page.wait(lambda: page.phones() == [first], "the first lead")
    before = _phone()
    _write(page.stack, workspace, before, lead_score=2)
    page.wait(lambda: before in page.phones(), "a change before the restart")  # stream open
    reconnects = int(page.evaluate("document.body.dataset.reconnects"))

    page.stack.stop_server()
    page.wait(lambda: page.connection() == "reconnecting", "the page to say it reconnects")
    page.stack.start_server()
    during = [_phone() for _ in range(3)]
    for score, phone in enumerate(during, start=3):
        _grpc_write(page.stack, workspace, phone, score)
    after = _phone()
    page.wait(lambda: set(during) <= set(page.phones()), "the writes made while it reconnected",
              20)
    _write(page.stack, workspace, after, lead_score=9)
    expected = [after, *reversed(during), before, first]
    page.wait(lambda: page.phones() == expected and page.stat("total") == str(len(expected)),
              "every lead, in order, and counted", 5)
    assert int(page.evaluate("document.body.dataset.reconnects")) > reconnects
    # The requests cut off by the restart, and the 503s while the server was away, are the
    # browser's own network log; the page itself reported nothing.
    assert page.errors(network=False) == []


def _requests(browser: Browser, since_url: str) -> list[dict[str, Any]]:
    """The page's requests after the last navigation to `since_url`."""
    sent = [event["request"] for event in browser.events("Network.requestWillBeSent")]
    last = max(i for i, request in enumerate(sent) if request["url"] == since_url)
    return sent[last:]


def test_a_refused_key_shows_the_refusal_and_the_right_key_lists(
        page: Page, workspace: str, tmp_path: Path) -> None:
    phone = _phone()
    _write(page.stack, workspace, phone, lead_score=50)
    keys = tmp_path / "api-keys.txt"
    keys.write_text("sk_dashboard_right * the dashboard\nsk_dashboard_other elsewhere bound\n")
    page.stack.stop_server()
    page.stack.start_server(api_keys_file=str(keys))
    try:
        page.stack.wait_until(lambda: page.stack.envoy.call("GET", "/sarah/stats")[0] == 401)
        url = f"http://127.0.0.1:{page.stack.envoy.port}/"  # a request's URL has no #fragment
        page.open(f"workspace={workspace}")
        page.wait(lambda: page.connection() == "refused" and page.shown("key-panel"),
                  "a 401, and the page asking for a key")
        assert page.rows() == []
        page.type_key("sk_dashboard_wrong")
        page.wait(lambda: page.shown("key-panel") and "refused" in page.evaluate(
            "document.getElementById('key-reason').textContent"), "the wrong key refused")
        page.type_key("sk_dashboard_right")
        page.wait(lambda: page.phones() == [phone] and not page.shown("key-panel"),
                  "the lead, with the right key")
        assert page.evaluate("sessionStorage.getItem('sarah.api_key')") == "sk_dashboard_right"
        calls = [r for r in _requests(page.browser, url) if "/sarah/" in r["url"]]
        assert calls and not any("sk_dashboard" in r["url"] for r in calls)
        assert calls[-1]["headers"].get("x-api-key") == "sk_dashboard_right"

        # A key of another workspace: refused with its 403, and not asked again by itself.
        page.evaluate("sessionStorage.setItem('sarah.api_key', 'sk_dashboard_other'); true")
        page.open(f"workspace={workspace}")
        page.wait(lambda: page.connection() == "refused" and "403" in page.evaluate(
            "document.getElementById('connection').textContent"), "a 403, shown")
        assert not page.shown("key-panel") and page.shown("change-key")
        assert page.errors(network=False) == []
    finally:
        page.evaluate("sessionStorage.clear(); true")
        page.stack.stop_server()
        page.stack.start_server()
        page.stack.wait_until(lambda: page.stack.envoy.call("GET", "/sarah/stats")[0] == 200)


def _colours(browser: Browser, png: bytes) -> dict[str, int]:
    """The picture's size and how many distinct colours it has, decoded by the browser."""
    result: dict[str, int] = browser.evaluate(
        "(async data => { const image = new Image();"
        " image.src = 'data:image/png;base64,' + data; await image.decode();"
        " const canvas = document.createElement('canvas');"
        " canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;"
        " const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);"
        " const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;"
        " return {width: canvas.width, height: canvas.height,"
        " colours: new Set(new Uint32Array(pixels.buffer)).size}; })"
        f"({json.dumps(base64.b64encode(png).decode())})", wait=True)
    return result


def test_screenshots_wide_and_on_a_phone_are_not_blank(
        page: Page, workspace: str, tmp_path: Path) -> None:
    for score, temperature, state, name in [(92, "hot", "handoff", "Budi"),
                                            (64, "warm", "scoring", "Sari"),
                                            (18, "cold", "greeting", "")]:
        _write(page.stack, workspace, _phone(), lead_score=score, lead_temperature=temperature,
               state=state, extracted_data={"name": name} if name else {}, add_messages=4)
    page.open(f"workspace={workspace}")
    page.wait(lambda: len(page.rows()) == 3 and page.stat("total") == "3", "three leads")
    page.evaluate("document.querySelector('#rows tr').click()")
    page.wait(lambda: page.evaluate("document.querySelectorAll('#history li').length") == 1,
              "a lead's history")
    page.evaluate("window.scrollTo(0, 0); true")  # the header first, as a person opens it
    try:
        for width, height, mobile in [(1280, 800, False), (390, 844, True)]:
            png = page.browser.screenshot(tmp_path / f"dashboard-{width}x{height}.png",
                                          width, height, mobile=mobile)
            seen = _colours(page.browser, png)
            assert (seen["width"], seen["height"]) == (width, height)
            assert seen["colours"] > 100, seen  # text, pills, bars: far from one colour
            # Usable on the phone: nothing wider than its screen, so no sideways scrolling.
            assert page.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        page.browser.reset_screen()
    assert page.errors() == []
