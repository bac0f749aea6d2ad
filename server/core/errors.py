"""Domain errors: raised by rules and storage, mapped to gRPC status in one place (status.py)."""


class SarahError(Exception):
    """Base of the errors a caller is told about."""


class InvalidArgument(SarahError):
    """One or more request fields are invalid; nothing was written."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("; ".join(f"{field}: {why}" for field, why in violations))


class EtagMismatch(SarahError):
    """The request's etag is not the stored one; nothing was written."""


class Unavailable(SarahError):
    """The database cannot serve the call right now (busy, locked, full, down)."""


class PermissionDenied(SarahError):
    """The caller's key does not reach the workspace (or the workspaces) asked for."""


class NotFound(SarahError):
    """The lead the request names does not exist (ChangeIdentity); nothing was written."""


class OutOfRange(SarahError):
    """A watch asked to resume from a revision whose later events are no longer retained."""


class ResourceExhausted(SarahError):
    """A limit was reached: too many watchers, or a watcher's buffer overflowed."""
