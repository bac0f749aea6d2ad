"""A real browser on /sarah/watch: headless Chromium opens an EventSource through Envoy,
the test writes leads over HTTP, and the page shows every change.

Envoy sends no CORS headers, so the page must come from Envoy's own origin, as a dashboard
served next to the API would: the test opens a URL of Envoy's, writes pages/watch.html
into that document (tests/support/browser.py), and reads the page's list of events back.
"""

import json
from pathlib import Path
from typing import Any

from harness.waiting import wait_until
from tests.support.browser import Browser, open_page
from tests.support.helpers import PHONE
from tests.support.stack import Stack

_PAGE = Path(__file__).parent / "pages" / "watch.html"


def _open_page(browser: Browser, origin: str, since: str) -> None:
    """pages/watch.html at Envoy's origin, told the revision to watch from."""
    open_page(browser, f"{origin}/sarah/stats#since={since}", _PAGE.read_text())


def _page_events(browser: Browser) -> list[dict[str, Any]]:
    texts = browser.evaluate(
        "Array.from(document.querySelectorAll('#events li'), item => item.textContent)")
    events = [json.loads(text) for text in texts or []]
    return [event for event in events if event["kind"] != "heartbeat"]


def test_browser_event_source_receives_every_change(sqlite_stack: Stack, browser: Browser
                                                    ) -> None:
    status, _, _ = sqlite_stack.envoy.call("POST", "/sarah/state", {"contact_phone": PHONE,
                                                              "lead_score": 5})
    assert status == 200
    status, _, stats = sqlite_stack.envoy.call("GET", "/sarah/stats")
    assert status == 200 and isinstance(stats, dict)
    since = stats["revision"]
    _open_page(browser, f"http://127.0.0.1:{sqlite_stack.envoy.port}", since)
    wait_until(lambda: browser.evaluate("document.body.dataset.state") == "open", 20,
               "the page's EventSource to open")

    written = [{"contact_phone": f"+62812555000{i:02d}", "workspace_id": "browser",
                "lead_score": 10 + i, "lead_temperature": "warm"} for i in range(3)]
    for body in written:
        assert sqlite_stack.envoy.call("POST", "/sarah/state", body)[0] == 200
    assert sqlite_stack.envoy.call("DELETE", f"/sarah/state?contact_phone={PHONE[1:]}")[0] == 200

    wait_until(lambda: len(_page_events(browser)) >= 4, 20, "the page to show 4 events")
    events = _page_events(browser)
    assert browser.evaluate("document.body.dataset.errors") == "0"
    assert [e["kind"] for e in events] == ["upserted", "upserted", "upserted", "deleted"]
    assert [(e["conversation"]["contact_phone"], e["conversation"]["lead_score"])
            for e in events[:3]] == [(b["contact_phone"], b["lead_score"]) for b in written]
    assert events[3]["conversation"]["contact_phone"] == PHONE
    # 64-bit revisions arrive as JSON strings of digits, each after the one before.
    revisions = [e["revision"] for e in events]
    assert all(isinstance(r, str) and r.isdigit() for r in revisions)
    assert [int(r) for r in revisions] == sorted({int(r) for r in revisions})
    assert int(revisions[0]) > int(since)
