"""One id joins Envoy's access log line of a call to the server's: the x-request-id Envoy
sends upstream is a field of the server's JSON log line of that call."""

import json
from pathlib import Path

from harness.envoy import EnvoyProcess
from harness.processes import ServerProcess


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_call_through_envoy_logs_its_request_id(tmp_path: Path) -> None:
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url",
                           f"sqlite:///{tmp_path / 'sarah.db'}", "--log-format", "json")
    envoy = EnvoyProcess(server.port, tmp_path)
    try:
        envoy.wait_healthy(1)
        status, headers, _ = envoy.call("GET", "/sarah/stats")
        assert status == 200
    finally:
        envoy.stop()
        log = server.stop()
    request_id = headers["x-request-id"]  # Envoy made it: the caller sent none
    call = next(line for line in _json_lines(log)
                if str(line.get("method", "")).endswith("/GetStats"))
    assert (call["request_id"], call["code"]) == (request_id, "OK")
    access = _json_lines(envoy.log_path.read_text())
    assert any(line.get("request_id") == request_id for line in access)
