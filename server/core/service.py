"""The service's use cases: each takes plain values, applies the rules, and calls the store."""

import dataclasses
import functools

from server.core import rules
from server.core.domain import Lead, LeadFilter, ListQuery, Patch, Stats
from server.core.pagination import decode_token, encode_token
from server.core.scope import EVERY_WORKSPACE, Scope, scoped_workspace
from server.storage.store import Store


class SarahService:
    """Conversation state of leads, independent of any transport."""

    def __init__(self, store: Store, default_region: str = "ID"):
        self._store = store
        self._region = default_region

    def get_state(self, contact_phone: str, workspace_id: str,
                  scope: Scope = EVERY_WORKSPACE) -> Lead:
        """The stored conversation, or the unsaved default one for an unknown lead."""
        workspace_id = scoped_workspace(workspace_id, scope)
        workspace_id, phone = rules.validate_key(contact_phone, workspace_id, self._region)
        stored = self._store.get(workspace_id, phone)
        return stored or Lead(workspace_id=workspace_id, contact_phone=phone)

    def upsert_state(self, patch: Patch, scope: Scope = EVERY_WORKSPACE) -> Lead:
        """Create or partially update a conversation; return it as stored."""
        scoped_workspace(patch.workspace_id, scope)  # a patch names its workspace: checked only
        patch = rules.validate_patch(patch, self._region)
        apply = functools.partial(rules.apply_patch, patch)
        return self._store.upsert(patch.workspace_id, patch.contact_phone, patch.request_id, apply)

    def delete_state(self, contact_phone: str, workspace_id: str,
                     scope: Scope = EVERY_WORKSPACE) -> bool:
        """Erase a conversation; True if there was one."""
        workspace_id = scoped_workspace(workspace_id, scope)
        workspace_id, phone = rules.validate_key(contact_phone, workspace_id, self._region)
        return self._store.delete(workspace_id, phone)

    def list_leads(self, query: ListQuery,
                   scope: Scope = EVERY_WORKSPACE) -> tuple[list[Lead], str]:
        """One page of leads and the token of the next page ("" on the last)."""
        query = dataclasses.replace(query, filter=_scoped(query.filter, scope))
        query = rules.validate_list_query(query)
        after = decode_token(query)
        order_key = query.order_by.split()[0]
        # One extra row tells whether another page follows without a second query.
        fetched = self._store.page(query.filter, order_key, after, query.page_size + 1)
        leads = fetched[: _fitting(fetched, query.page_size)]
        if len(leads) == len(fetched):
            return leads, ""
        last = leads[-1]
        position = (getattr(last, order_key), last.contact_phone, last.workspace_id)
        return leads, encode_token(query, position)

    def get_stats(self, lead_filter: LeadFilter, scope: Scope = EVERY_WORKSPACE) -> Stats:
        """Counts by temperature and state, and the mean score."""
        lead_filter = _scoped(lead_filter, scope)
        return self._store.stats(rules.validate_filter(lead_filter).workspace_id)


def _scoped(lead_filter: LeadFilter, scope: Scope) -> LeadFilter:
    return dataclasses.replace(
        lead_filter, workspace_id=scoped_workspace(lead_filter.workspace_id, scope))


# 500 leads with every text at its limit would be ~5 MB, over gRPC's default 4 MiB message
# limit on the caller's side; a page stops early instead, and its token continues it.
_PAGE_BYTES = 3 * 1024 * 1024
_LEAD_OVERHEAD_BYTES = 200


def _approx_size(lead: Lead) -> int:
    texts = (lead.name, lead.business_type, lead.goals, *lead.pain_points)
    return _LEAD_OVERHEAD_BYTES + sum(len(t.encode()) for t in texts if t)


def _fitting(leads: list[Lead], page_size: int) -> int:
    """How many of `leads` make the page: at most page_size, and within _PAGE_BYTES."""
    total = 0
    for count, lead in enumerate(leads[:page_size]):
        total += _approx_size(lead)
        if total > _PAGE_BYTES and count > 0:
            return count
    return min(len(leads), page_size)
