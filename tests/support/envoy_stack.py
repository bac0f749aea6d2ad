"""Names tests/e2e/test_stack.py still imports from here; the harness itself lives in
ports, http_calls, envoy and stack. Drop this module once that test imports from those."""

from deploy.envoy_config import envoy_binary
from tests.support.envoy import envoy_config
from tests.support.http_calls import request
from tests.support.ports import free_port
from tests.support.stack import start_stack

ENVOY = envoy_binary()

__all__ = ["ENVOY", "envoy_config", "free_port", "request", "start_stack"]
