"""Headless Chromium for the tests that need a real browser: driven over its DevTools
protocol on a pipe (--remote-debugging-pipe: no port, no extra package)."""

import base64
import contextlib
import fcntl
import itertools
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from harness.apt import apt_install
from harness.waiting import wait_until

_CHROMIUM = "/usr/bin/chromium"
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--remote-debugging-pipe")


def _chromium() -> str:
    """Debian's chromium, installed first when it is missing and the test runs as root."""
    if not os.path.exists(_CHROMIUM) and os.geteuid() == 0:
        apt_install("chromium")
    assert os.path.exists(_CHROMIUM), f"{_CHROMIUM} is missing: apt-get install chromium"
    return _CHROMIUM


def _high(fd: int) -> int:
    """`fd` moved to 10 or above, so the shell's 3<& and 4>& cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Browser:
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
        self._events: list[dict[str, Any]] = []  # what the browser told unasked, in order
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
                with self._arrived:
                    if "id" in message:  # a reply
                        self._replies[message["id"]] = message
                        self._arrived.notify_all()
                    else:  # an event, of the domains enabled (Runtime, Log, Network...)
                        self._events.append(message)

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

    def evaluate(self, expression: str, *, wait: bool = False) -> Any:
        """`expression`'s value in the page, as JSON would carry it; with `wait`, the value
        of the promise it returns, once settled."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=wait)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def events(self, method: str) -> list[dict[str, Any]]:
        """The params of every `method` event the browser sent so far (its domain enabled)."""
        with self._arrived:
            return [event.get("params", {}) for event in self._events
                    if event.get("method") == method]

    def watch_console(self) -> None:
        """Record, from now on (and what the page logged before), its console, uncaught
        exceptions and the browser's own log, for console_errors."""
        self.call("Runtime.enable")
        self.call("Log.enable")

    def console_errors(self, since: int = 0, *, network: bool = True) -> list[str]:
        """The errors recorded after the first `since` events (see event_count): uncaught
        exceptions, console.error, and the browser's log errors -- of the network too (a
        request answered 4xx/5xx, a stream cut off) unless `network` is False."""
        with self._arrived:
            events = self._events[since:]
        found = []
        for event in events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description", details["text"]))
            elif (event.get("method") == "Runtime.consoleAPICalled"
                  and params["type"] in ("error", "assert")):
                found.append(" ".join(str(arg.get("value", arg.get("description")))
                                      for arg in params["args"]))
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                if network or entry["source"] != "network":
                    found.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
        return found

    def event_count(self) -> int:
        with self._arrived:
            return len(self._events)

    def screenshot(self, path: Path, width: int, height: int, *, mobile: bool = False) -> bytes:
        """The page as a `width`x`height` screen (a phone's with `mobile`) shows it, as PNG,
        written to `path` too; the screen stays that size (reset_screen)."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)
        # Laid out and painted at the new size before the picture is taken.
        self.evaluate("new Promise(done => requestAnimationFrame(() => "
                      "requestAnimationFrame(() => done(true))))", wait=True)
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return png

    def reset_screen(self) -> None:
        self.call("Emulation.clearDeviceMetricsOverride")

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


def open_page(browser: Browser, url: str, html: str) -> None:
    """`html` as the document of `url`'s origin (so that its requests are same-origin, as a
    page served there would be): open `url`, then write `html` into that document."""
    origin = url.split("/", 3)[:3]
    browser.call("Page.navigate", url=url)
    wait_until(lambda: browser.evaluate(
        f"location.href.startsWith({json.dumps('/'.join(origin))}) && document.readyState")
        == "complete", 20, "chromium to load a page of that origin")
    browser.evaluate(f"document.open(); document.write({json.dumps(html)}); "
                     "document.close(); true")
