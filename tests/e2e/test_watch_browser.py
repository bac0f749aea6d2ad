"""A real browser on /sarah/watch: headless Chromium opens an EventSource through Envoy,
the test writes leads over HTTP, and the page shows every change.

Envoy sends no CORS headers, so the page must come from Envoy's own origin, as a dashboard
served next to the API would. The test drives Chromium over its DevTools protocol on a
pipe (--remote-debugging-pipe: no port, no extra package): it opens a URL of Envoy's, writes
pages/watch.html into that document, and reads the page's list of events back.
"""

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import new_database_url
from tests.support.helpers import PHONE
from tests.support.stack import Stack
from tests.support.waiting import wait_until

_PAGE = Path(__file__).parent / "pages" / "watch.html"
_CHROMIUM = "/usr/bin/chromium"
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--remote-debugging-pipe")


def _chromium() -> str:
    """Debian's chromium, installed first when it is missing and the test runs as root."""
    if not os.path.exists(_CHROMIUM) and os.geteuid() == 0:
        apt = shutil.which("apt-get") or "apt-get"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run([apt, "install", "-y", "chromium"], env=env).returncode != 0:
            subprocess.run([apt, "update"], env=env, check=True)
            subprocess.run([apt, "install", "-y", "chromium"], env=env, check=True)
    assert os.path.exists(_CHROMIUM), f"{_CHROMIUM} is missing: apt-get install chromium"
    return _CHROMIUM


def _high(fd: int) -> int:
    """`fd` moved to 10 or above, so the shell's 3<& and 4>& cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class _Browser:
    """Headless Chromium, spoken to in DevTools protocol messages: JSON, each ended by a NUL,
    read from its fd 3 and written to its fd 4."""

    def __init__(self, workdir: Path) -> None:
        to_browser_r, self._to_browser = (_high(fd) for fd in os.pipe())
        self._from_browser, from_browser_w = (_high(fd) for fd in os.pipe())
        profile = workdir / "chromium-profile"
        argv = [_chromium(), *_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self._log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "chromium",
             *argv],
            pass_fds=(to_browser_r, from_browser_w), stdout=self._log, stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self._session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]

    def _read(self) -> None:
        buffered = b""
        while chunk := os.read(self._from_browser, 65536):
            buffered += chunk
            *messages, buffered = buffered.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:  # a reply; events are not needed here
                    with self._arrived:
                        self._replies[message["id"]] = message
                        self._arrived.notify_all()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One command (to the page once attached); its result, or AssertionError."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        with self._arrived:
            if not self._arrived.wait_for(lambda: number in self._replies, timeout=30):
                raise AssertionError(f"no reply to {method} from chromium: {self._tail()}")
            reply = self._replies.pop(number)
        assert "error" not in reply, (method, reply["error"])
        return dict(reply["result"])

    def evaluate(self, expression: str) -> Any:
        """`expression`'s value in the page, as JSON would carry it."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def _tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self._session = ""
            with contextlib.suppress(AssertionError, OSError):
                self.call("Browser.close")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self._to_browser)
        self._log.close()


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    running = Stack(tmp_path, new_database_url("sqlite", tmp_path, request))
    yield running
    running.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[_Browser]:
    started = _Browser(tmp_path)
    yield started
    started.close()


def _open_page(browser: _Browser, origin: str, since: str) -> None:
    """pages/watch.html at Envoy's origin: open one of its URLs, then write the page in."""
    browser.call("Page.navigate", url=f"{origin}/sarah/stats#since={since}")
    wait_until(lambda: browser.evaluate(
        f"location.href.startsWith({json.dumps(origin)}) && document.readyState") == "complete",
        20, "chromium to load a page of Envoy's")
    page = json.dumps(_PAGE.read_text())
    browser.evaluate(f"document.open(); document.write({page}); document.close(); true")


def _page_events(browser: _Browser) -> list[dict[str, Any]]:
    texts = browser.evaluate(
        "Array.from(document.querySelectorAll('#events li'), item => item.textContent)")
    events = [json.loads(text) for text in texts or []]
    return [event for event in events if event["kind"] != "heartbeat"]


def test_browser_event_source_receives_every_change(stack: Stack, browser: _Browser) -> None:
    status, _, _ = stack.envoy.call("POST", "/sarah/state", {"contact_phone": PHONE,
                                                              "lead_score": 5})
    assert status == 200
    status, _, stats = stack.envoy.call("GET", "/sarah/stats")
    assert status == 200 and isinstance(stats, dict)
    since = stats["revision"]
    _open_page(browser, f"http://127.0.0.1:{stack.envoy.port}", since)
    wait_until(lambda: browser.evaluate("document.body.dataset.state") == "open", 20,
               "the page's EventSource to open")

    written = [{"contact_phone": f"+62812555000{i:02d}", "workspace_id": "browser",
                "lead_score": 10 + i, "lead_temperature": "warm"} for i in range(3)]
    for body in written:
        assert stack.envoy.call("POST", "/sarah/state", body)[0] == 200
    assert stack.envoy.call("DELETE", f"/sarah/state?contact_phone={PHONE[1:]}")[0] == 200

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
