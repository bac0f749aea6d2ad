"""schemathesis sends the requests it generates from openapi.yaml to a live stack (a real
server and Envoy): no response may be a 5xx, and every response must match the document
(status code, content type, body schema)."""

import subprocess
import sys
from pathlib import Path

from tests.support.stack import Stack
from tools.openapi import OPENAPI_YAML

# Bounded for `make test`; raise it by hand for a longer hunt.
_EXAMPLES = "25"
_CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
           "response_schema_conformance")


def test_generated_requests_get_documented_answers_and_no_5xx(stack: Stack,
                                                             tmp_path: Path) -> None:
    report = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", str(OPENAPI_YAML),
         "--url", f"http://127.0.0.1:{stack.envoy.port}",
         "--checks", _CHECKS, "--max-examples", _EXAMPLES, "--seed", "1",
         # The stream never ends by itself; test_watch_http.py covers it.
         "--exclude-path", "/sarah/watch",
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert report.returncode == 0, report.stdout[-6000:] + report.stderr[-2000:]
