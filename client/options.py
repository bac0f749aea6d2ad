"""Settings shared by the blocking and the asyncio client: deadline, retries, bearer token."""

import json
import logging
from dataclasses import dataclass, field

from sarah.v1 import sarah_pb2

_LOGGER = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0

# Every service of the proto, read from the descriptor so a new service is covered too.
_SERVICES = tuple(s.full_name for s in sarah_pb2.DESCRIPTOR.services_by_name.values())

# Reconnect quickly after a server restart: with gRPC's defaults (1 s, growing to 120 s) a
# channel that saw the server down keeps failing calls long after it is back.
_RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]

ChannelOption = tuple[str, str | int]
ChannelOptions = list[ChannelOption]
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retry policy for UNAVAILABLE, sent to the channel as its service config.

    gRPC waits a random time up to initial_backoff, then up to initial_backoff *
    backoff_multiplier, and so on, capped by max_backoff. It caps max_attempts at 5;
    1 turns retries off. The call's deadline bounds the attempts together.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0

    def service_config(self) -> str:
        """The channel's service config as JSON (gRFC A6 retryPolicy)."""
        method: dict[str, object] = {"name": [{"service": name} for name in _SERVICES]}
        if self.max_attempts > 1:
            method["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff}s",
                "maxBackoff": f"{self.max_backoff}s",
                "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
        return json.dumps({"methodConfig": [method]})


@dataclass(frozen=True)
class ClientSettings:
    """What every call of a client carries: its deadline and its metadata."""

    target: str = DEFAULT_TARGET
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def channel_options(self) -> ChannelOptions:
        """The client's own channel options, for the blocking and the asyncio channel alike."""
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", self.retry.service_config()),
            *_RECONNECT_OPTIONS,
        ]

    @property
    def metadata(self) -> Metadata:
        """The bearer token, when there is one, as gRPC metadata (keys are lowercase)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def deadline(self, timeout: float | None) -> float:
        """Seconds a call may take: its own timeout, or the client's default."""
        return self.timeout if timeout is None else timeout
