"""The documented live-changes examples, run as written against a real stack (the server
and Envoy in front of it): docs/kapso.md's curl session through Envoy and EventSource
snippet (in headless Chromium), docs/cli.md's Python client loop and `sarah watch`. What
each prints is held against what the docs show, their revisions shifted to the stack's.

Each example is started first; the test writes only once the server holds its stream
(Hub.watching), so the events it waits for are after the revision the example watches
from, whenever the example got there."""

import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from deploy import ROOT
from harness.waiting import wait_until
from tests.support.browser import Browser, open_page
from tests.support.docs import docs_blocks
from tests.support.helpers import PHONE
from tests.support.stack import Stack

# The stream through Envoy, for dashboards; the same from Python and a terminal.
_HTTP = ("docs/kapso.md", "Live changes through Envoy (Server-Sent Events)")
_CLIENT = ("docs/cli.md", "Live changes")
_ELIDED = "…"


def _revision(stack: Stack) -> int:
    status, _, stats = stack.envoy.call("GET", "/sarah/stats")
    assert status == 200 and isinstance(stats, dict)
    return int(stats["revision"])


def _write(stack: Stack, method: str, path: str, body: object = None) -> None:
    status, _, answer = stack.envoy.call(method, path, body)
    assert status == 200, (method, path, answer)


def _watched(stack: Stack) -> None:
    """Wait until the example's stream is open on the server."""
    assert stack.server is not None
    hub = stack.server.hub
    wait_until(lambda: hub.watching() == 1, 30, "the example to open its stream")


def _session(block: str) -> list[tuple[str, list[str]]]:
    """A ```console block as (command, the lines it printed) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif line.strip():
            pairs[-1][1].append(line)
    return pairs


def _shown_json(text: str) -> Any:
    """JSON as the docs show it, "…" standing for what is left out."""
    return json.loads(re.sub(r",\s*…", "", text))


def _agrees(shown: Any, actual: Any, path: str = "") -> None:
    """Every field the docs show is in `actual`, with the value shown ("…": any)."""
    if shown == _ELIDED:
        return
    if isinstance(shown, dict):
        assert isinstance(actual, dict), (path, actual)
        for key, value in shown.items():
            assert key in actual, (f"{path}.{key}", actual)
            _agrees(value, actual[key], f"{path}.{key}")
        return
    assert shown == actual, (path, shown, actual)


class _Lines:
    """What a child process prints, line by line, read by a thread as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition: Callable[[list[str]], bool], what: str) -> list[str]:
        def met() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            return condition(self.lines)
        wait_until(met, 30, what)
        return list(self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_the_curl_session_lists_then_watches_from_the_revision(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    block = docs_blocks(*_HTTP, "console")[0]
    (stats_command, [stats_shown]), (watch_command, [frame_shown]) = _session(block)
    shown_stats, shown_event = _shown_json(stats_shown), _shown_json(
        frame_shown.removeprefix("data: "))
    # The leads the docs' stats count, the one its event changes among them (warm
    # already, so that a new state and score are all that change).
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_temperature": "warm"})
    for i in range(1, shown_stats["total"]):
        _write(stack, "POST", "/sarah/state", {"contact_phone": f"+6281200000{i:03d}"})

    def run(command: str) -> list[str]:
        return shlex.split(command.replace("127.0.0.1:8080", f"127.0.0.1:{stack.envoy.port}"),
                           comments=True)

    listed = subprocess.run(run(stats_command), capture_output=True, text=True, timeout=30,
                            check=True).stdout
    stats = json.loads(listed)
    _agrees({**shown_stats, "revision": _ELIDED}, stats)
    # The docs watch from the revision their stats showed; this stack's is another.
    since = shown_stats["revision"]
    assert f"since_revision={since}" in watch_command
    curl = _Lines(run(watch_command.replace(f"since_revision={since}",
                                            f"since_revision={stats['revision']}")))
    try:
        _watched(stack)
        _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "state": "qualifying",
                                               "lead_score": 45})
        lines = curl.wait_for(lambda got: any(line.startswith("data: ") for line in got),
                              "curl to print the event")
    finally:
        curl.stop()
    event = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    # The event after the one listed, as the docs' is the one after their 41.
    shift = int(stats["revision"]) - int(since)
    _agrees({**shown_event, "revision": str(int(shown_event["revision"]) + shift)}, event)


_HARNESS = """<!doctype html>
<html><head><meta charset="utf-8"></head><body><ol id="events"></ol>
<script>
  const listed = {revision: "%s"};  // what the dashboard listed: ListLeads' JSON
  const render = (event) => {
    const item = document.createElement("li");
    item.textContent = JSON.stringify(event);
    document.getElementById("events").appendChild(item);
  };
</script>
<script>
%s
</script>
</body></html>
"""


def test_the_event_source_snippet_renders_each_change(sqlite_stack: Stack,
                                                      browser: Browser) -> None:
    stack = sqlite_stack
    [snippet] = docs_blocks(*_HTTP, "js")
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_score": 5})
    since = _revision(stack)
    open_page(browser, f"http://127.0.0.1:{stack.envoy.port}/sarah/stats",
              _HARNESS % (since, snippet))
    _watched(stack)
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_score": 60})
    _write(stack, "POST", "/sarah/state", {"contact_phone": "+6281255556666"})
    _write(stack, "DELETE", f"/sarah/state?contact_phone={PHONE[1:]}")

    def rendered() -> list[dict[str, Any]]:
        texts = browser.evaluate(
            "Array.from(document.querySelectorAll('#events li'), item => item.textContent)")
        return [json.loads(text) for text in texts or []]

    wait_until(lambda: len(rendered()) >= 3, 30, "the page to render 3 events")
    events = rendered()
    assert [(e["revision"], e["kind"], e["conversation"]["contact_phone"]) for e in events] == [
        (str(since + 1), "upserted", PHONE), (str(since + 2), "upserted", "+6281255556666"),
        (str(since + 3), "deleted", PHONE)]
    assert browser.evaluate("last.toString()") == str(since + 3)


class _Enough(Exception):
    """Ends the docs' endless loop once it has printed what the test waits for."""


def test_the_python_loop_prints_each_change(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    [example] = docs_blocks(*_CLIENT, "python")
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_score": 90,
                                           "lead_temperature": "hot"})
    printed: list[str] = []

    def collect(*values: object) -> None:  # the example's print
        printed.append(" ".join(str(value) for value in values))
        if len(printed) == 3:
            raise _Enough

    failures: list[BaseException] = []

    def run() -> None:
        code = example.replace("127.0.0.1:50051", f"127.0.0.1:{stack.grpc_port}")
        try:
            exec(code, {"print": collect})  # our own docs, run as written
        except _Enough:
            pass
        except BaseException as failed:  # noqa: BLE001 - reported by the test
            failures.append(failed)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    _watched(stack)
    since = _revision(stack)
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_score": 95})
    _write(stack, "POST", "/sarah/state", {"contact_phone": "+6281255556666",
                                           "lead_score": 40})
    _write(stack, "DELETE", f"/sarah/state?contact_phone={PHONE[1:]}")
    runner.join(timeout=30)
    assert not runner.is_alive() and not failures, (printed, failures)
    assert printed == [f"{since + 1} upserted 95", f"{since + 2} upserted 40",
                       f"{since + 3} deleted 0"]


def test_sarah_watch_prints_the_lines_the_docs_show(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    [session] = [block for block in docs_blocks(*_CLIENT, "console")
                 if "$ sarah watch" in block]
    [(command, shown)] = _session(session)
    first = int(shown[0].split()[0])
    # The lead of the docs' lines: warm already, so state and score are what change.
    _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "lead_temperature": "warm"})
    argv = [sys.executable, "-m", "client", *shlex.split(command)[1:]]
    watch = _Lines(argv, env={**os.environ, "SARAH_TARGET": f"127.0.0.1:{stack.grpc_port}",
                              "PYTHONPATH": str(ROOT)})
    try:
        _watched(stack)
        since = _revision(stack)
        _write(stack, "POST", "/sarah/state", {"contact_phone": PHONE, "state": "qualifying",
                                               "lead_score": 45})
        _write(stack, "DELETE", f"/sarah/state?contact_phone={PHONE[1:]}")
        lines = watch.wait_for(lambda got: len(got) >= len(shown), "sarah watch to print")
    finally:
        watch.stop()
    # The docs' revisions, moved to where this stack's log stands.
    expected = [f"{int(rev) - first + since + 1} {rest}"
                for rev, rest in (line.split(" ", 1) for line in shown)]
    assert lines == expected
