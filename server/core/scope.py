"""Workspace scoping: which workspace a call reaches, given the workspace its caller may see.

Who calls is settled at the edge (an API key, api/auth.py); what that caller may reach is
the service's rule, written here once for every call that names a workspace.
"""

from dataclasses import dataclass
from typing import overload

from server.core.errors import PermissionDenied


@dataclass(frozen=True)
class Scope:
    """The workspaces a caller may reach: every one, or the one its key is bound to."""

    workspace: str | None = None  # None: every workspace
    label: str = ""  # names the caller's key in a refusal


EVERY_WORKSPACE = Scope()


@overload
def scoped_workspace(requested: str, scope: Scope) -> str: ...
@overload
def scoped_workspace(requested: str | None, scope: Scope) -> str | None: ...
def scoped_workspace(requested: str | None, scope: Scope) -> str | None:
    """The workspace a call reaches: `requested`, held to `scope`.

    `requested` is None where the workspace may be left out (ListLeads, GetStats): that means
    "every workspace" to a caller who may see all, and "mine" to a caller bound to one.
    "" is the default workspace, not "mine". Raises PermissionDenied for any other workspace.
    """
    if scope.workspace is None:
        return requested
    if requested is None:
        return scope.workspace
    if requested != scope.workspace:
        # Cut short: a status message over 8 KiB would replace this error with another.
        raise PermissionDenied(f"this key is not allowed workspace {requested[:64]!r}")
    return requested


def require_every_workspace(scope: Scope) -> None:
    """Refuse a caller bound to one workspace an operation that spans workspaces (import)."""
    if scope.workspace is not None:
        raise PermissionDenied(
            f"this operation needs a key for every workspace; {scope.label!r} is bound to "
            f"workspace {scope.workspace!r}")
