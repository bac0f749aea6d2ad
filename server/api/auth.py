"""API keys: who may call, and which workspace each key may see.

The keys file (SARAH_API_KEYS_FILE) has one key per line: `KEY WORKSPACE [LABEL...]`.
KEY is the key itself or, better, its hash `sha256:<hex>` (`sarah-server hash-key`
prints it), so the file need not hold a usable secret. WORKSPACE is a workspace id, or
`*` for every workspace. Blank lines and lines starting with # are ignored.
"""

import hashlib
import hmac
import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from server.core.domain import WORKSPACE_ID
from server.core.scope import EVERY_WORKSPACE, Scope

_LOGGER = logging.getLogger(__name__)

ALL_WORKSPACES = "*"
_HASH_PREFIX = "sha256:"
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    workspace: str  # ALL_WORKSPACES, or the one workspace the key may see
    label: str

    @property
    def scope(self) -> Scope:
        """The workspaces this key reaches."""
        every = self.workspace == ALL_WORKSPACES
        return Scope(workspace=None if every else self.workspace, label=self.label)


def hash_key(key: str) -> str:
    """The form of `key` to write in the keys file."""
    return _HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str) -> list[ApiKey]:
    """The keys of a keys file's text; ValueError names the first bad line."""
    keys: list[ApiKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 2:
            raise ValueError(f"line {number}: expected `KEY WORKSPACE [LABEL]`")
        secret, workspace, label = words[0], words[1], " ".join(words[2:])
        if workspace != ALL_WORKSPACES and not WORKSPACE_ID.fullmatch(workspace):
            raise ValueError(f"line {number}: {workspace!r} is not a workspace id or *")
        if secret.startswith(_HASH_PREFIX) and not _HASH_RE.fullmatch(secret):
            raise ValueError(f"line {number}: a hash is sha256: and 64 lowercase hex digits")
        hashed = secret if _HASH_RE.fullmatch(secret) else hash_key(secret)
        digest = bytes.fromhex(hashed.removeprefix(_HASH_PREFIX))
        keys.append(ApiKey(digest, workspace, label or f"line {number}"))
    return keys


class KeyRing:
    """The keys of one file, re-read on demand (SIGHUP) without disturbing calls."""

    def __init__(self, path: Path):
        self._path = path
        self._keys = parse_keys(path.read_text())
        if not self._keys:
            raise ValueError(f"{path} holds no keys")

    def __len__(self) -> int:
        return len(self._keys)

    def reload(self) -> None:
        """Read the file again; on any error keep the keys in use and log why."""
        try:
            keys = parse_keys(self._path.read_text())
        except (OSError, ValueError) as exc:
            _LOGGER.error("keeping the current API keys: cannot reload %s: %s", self._path, exc)
            return
        self._keys = keys  # one assignment: a call sees the old list or the new, whole
        _LOGGER.info("reloaded %d API keys from %s", len(keys), self._path)

    def find(self, presented: str) -> ApiKey | None:
        """The key matching `presented`; every entry is compared, in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found


def presented_key(metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
    """The key a caller sent: `authorization: Bearer KEY` or Kapso's `x-api-key: KEY`."""
    for name, value in metadata:
        if not isinstance(value, str):
            continue
        if name == "x-api-key" and value.strip():
            return value.strip()
        if name == "authorization" and value[:7].lower() == "bearer " and value[7:].strip():
            return value[7:].strip()
    return None


# Who the current call's caller may reach. The auth interceptor sets it; grpc runs the
# interceptors and the handler of one call in one fresh contextvars.Context, so the value
# belongs to that call alone. Without keys nothing sets it: every caller reaches everything.
_CALLER_SCOPE: ContextVar[Scope] = ContextVar("caller_scope", default=EVERY_WORKSPACE)


def set_caller_scope(scope: Scope) -> None:
    """Record, for the call being handled, which workspaces its caller may reach."""
    _CALLER_SCOPE.set(scope)


def caller_scope() -> Scope:
    """Which workspaces the caller of the call being handled may reach."""
    return _CALLER_SCOPE.get()
