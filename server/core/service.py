"""The service's use cases: each takes plain values, applies the rules, and owns its unit
of work (what a write reads, checks and writes, in one transaction of the store)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

from server.core import identity, rules
from server.core.activity import ActivityDay, ActivityDeltas, local_days, per_day
from server.core.changes import Change, Event, changes_of
from server.core.counts import CountDeltas, stats_of
from server.core.domain import (
    ORDER_KEYS,
    IdentityChange,
    Lead,
    LeadFilter,
    LeadKey,
    ListQuery,
    Patch,
    Stats,
)
from server.core.errors import NotFound
from server.core.pagination import (
    decode_history_token,
    decode_token,
    encode_history_token,
    encode_token,
)
from server.core.ports import Store, WriteTx
from server.core.scope import EVERY_WORKSPACE, Scope, scoped_workspace

# A request_id is answered from its record for 24 hours (the contract's window); expired
# records are removed by housekeeping (core/housekeeping.py), not by the writes.
REQUEST_ID_TTL_US = 24 * 3600 * 1_000_000
# The change log keeps this many days of events (SARAH_HISTORY_DAYS).
DEFAULT_HISTORY_DAYS = 90.0
_DAY_US = 24 * 3600 * 1_000_000


def now_us() -> int:
    """The wall clock in microseconds since the epoch."""
    return time.time_ns() // 1000


class SarahService:
    """Conversation state of leads, independent of any transport."""

    def __init__(self, store: Store, default_region: str = "ID",
                 clock: Callable[[], int] = now_us,
                 history_days: float = DEFAULT_HISTORY_DAYS,
                 purge_inactive_days: float | None = None):
        self._store = store
        self._region = default_region
        self._clock = clock
        self._history_us = int(history_days * _DAY_US)
        self._purge_us = None if purge_inactive_days is None else int(
            purge_inactive_days * _DAY_US)

    def get_state(self, contact_phone: str, workspace_id: str,
                  scope: Scope = EVERY_WORKSPACE, business_scoped_user_id: str = "") -> Lead:
        """The stored lead, or the unsaved default one for an unknown lead."""
        workspace_id = scoped_workspace(workspace_id, scope)
        key = rules.validate_key(contact_phone, workspace_id, self._region,
                                 business_scoped_user_id)
        stored = identity.meant(key, self._store.holders(key))
        return stored or Lead(workspace_id=workspace_id, contact_phone=key.contact_phone,
                              business_scoped_user_id=key.business_scoped_user_id)

    def upsert_state(self, patch: Patch, scope: Scope = EVERY_WORKSPACE) -> Lead:
        """Create or partially update a lead; return it as stored.

        With a request_id seen for this lead in the last 24 hours, return what that
        request left and write nothing.
        """
        scoped_workspace(patch.workspace_id, scope)  # a patch names its workspace: checked only
        patch = rules.validate_patch(patch, self._region)
        return self._store.write(functools.partial(self._upsert, patch))

    def _upsert(self, patch: Patch, tx: WriteTx) -> Lead:
        now = self._clock()
        # Lock the keys and the leads first: two retries of one request_id (or two
        # writers with one person's two halves) then run one after the other, and the
        # second finds what the first wrote.
        tx.lock_keys([patch.key])
        plan = identity.upsert_plan(patch.key, tx.lock_holders(patch.key))
        if patch.request_id:
            seen = tx.find_request(plan.old.key if plan.old else patch.key, patch.request_id,
                                   since=now - REQUEST_ID_TTL_US)
            if seen is not None:
                return seen
        lead = rules.apply_patch(patch, plan.base, now)
        pairs = _write_plan(tx, plan, lead, now)
        if patch.request_id:
            tx.save_request(patch.request_id, now, lead)
        self._append_changes(tx, changes_of(pairs), now)
        return lead

    def change_identity(self, change: IdentityChange, scope: Scope = EVERY_WORKSPACE) -> Lead:
        """Move a lead from its old key to the new one; return it under the new key.

        If the old key finds no lead but the new key does, the change already happened:
        that lead is returned and nothing is written. If neither does: NotFound.
        """
        scoped_workspace(change.old.workspace_id, scope)
        change = rules.validate_identity_change(change, self._region)
        return self._store.write(functools.partial(self._change_identity, change))

    def _change_identity(self, change: IdentityChange, tx: WriteTx) -> Lead:
        now = self._clock()
        asked = identity.requested_key(change)
        tx.lock_keys([change.old, asked])
        lead = identity.meant(change.old, tx.lock_holders(change.old))
        if lead is None:
            done = identity.meant(asked, tx.lock_holders(asked))
            if done is None:
                raise NotFound("no lead holds the old key or the new one; nothing changed")
            return done
        target = identity.key_after(change, lead)
        if target == lead.key:
            return lead  # it holds the new key already
        if change.request_id:
            seen = tx.find_request(lead.key, change.request_id, since=now - REQUEST_ID_TTL_US)
            if seen is not None:
                return seen
        plan = identity.settle(lead, target.contact_phone, target.business_scoped_user_id,
                               tx.lock_holders(target))
        assert plan.base is not None  # settle() of a stored lead keeps a lead
        moved = dataclasses.replace(plan.base, updated_at=now, etag=rules.new_etag())
        pairs = _write_plan(tx, plan, moved, now)
        if change.request_id:
            tx.save_request(change.request_id, now, moved)
        self._append_changes(tx, changes_of(pairs), now)
        return moved

    def _append_changes(self, tx: WriteTx, changes: list[Change], now: int) -> None:
        """Append the write's changes to the change log as events, last in its transaction
        (the revision counter's lock is held from there to commit)."""
        tx.append_events(changes, now)

    def delete_state(self, contact_phone: str, workspace_id: str,
                     scope: Scope = EVERY_WORKSPACE, business_scoped_user_id: str = "") -> bool:
        """Erase the lead either key finds and every request record of it; True if there
        was one."""
        workspace_id = scoped_workspace(workspace_id, scope)
        key = rules.validate_key(contact_phone, workspace_id, self._region,
                                 business_scoped_user_id)
        return self._store.write(functools.partial(self._delete, key))

    def _delete(self, key: LeadKey, tx: WriteTx) -> bool:
        tx.lock_keys([key])
        holders = tx.lock_holders(key)
        old = identity.meant(key, holders)
        if old is None:
            # Records under a key no lead holds are of an erased lead; a key another person
            # holds keeps that person's records.
            tx.delete_requests(LeadKey(
                key.workspace_id,
                key.contact_phone if holders.by_phone is None else "",
                key.business_scoped_user_id if holders.by_bsuid is None else ""))
            return False
        self._erase(old, tx)
        return True

    def _erase(self, old: Lead, tx: WriteTx) -> None:
        """DeleteState's erasure of the stored lead `old`, locked in this transaction."""
        tx.delete_requests(old.key)
        tx.delete_lead(old)
        deltas = CountDeltas()
        deltas.change(old, None)
        tx.add_counts(deltas)
        # Erasure: the lead's earlier events carry its personal data; its deleted event
        # (keys only) is all that stays. Its activity counts hold none, and stay.
        tx.erase_events(old)
        self._append_changes(tx, changes_of([(old, None)]), self._clock())

    # Housekeeping's units of work (core/housekeeping.py runs them, a batch at a time).

    def history_end(self) -> int | None:
        """The newest revision past the retained history: retention removes every event
        up to it. None if nothing is past it."""
        return self._store.newest_past(self._clock() - self._history_us)

    def prune_history(self, through: int, limit: int) -> int:
        """Remove up to `limit` of the oldest events at or below revision `through`, in one
        short write; how many went."""
        return self._store.write(lambda tx: tx.prune_events(through, limit))

    def prune_requests(self, limit: int) -> int:
        """Forget up to `limit` request ids past their 24 hours, in one short write."""
        created_up_to = self._clock() - REQUEST_ID_TTL_US
        return self._store.write(lambda tx: tx.prune_requests(created_up_to, limit))

    def inactive_leads(self, limit: int) -> list[LeadKey]:
        """Up to `limit` leads with no message for SARAH_PURGE_INACTIVE_DAYS, the longest
        silent first; none when the purge is off. A lead that never had a message counts
        from its creation: a create stamps last_message_at."""
        if self._purge_us is None:
            return []
        return self._store.inactive(self._clock() - self._purge_us, limit)

    def purge(self, key: LeadKey) -> bool:
        """Erase the lead `key` names as DeleteState does, if it is still inactive when
        locked (a message may have come since it was listed); True if it was erased. A
        lead another replica erased first is simply not found."""
        return self._store.write(functools.partial(self._purge, key))

    def _purge(self, key: LeadKey, tx: WriteTx) -> bool:
        if self._purge_us is None:
            return False
        tx.lock_keys([key])
        old = identity.meant(key, tx.lock_holders(key))
        if old is None or old.last_message_at is None or \
                old.last_message_at >= self._clock() - self._purge_us:
            return False
        self._erase(old, tx)
        return True

    def list_leads(self, query: ListQuery,
                   scope: Scope = EVERY_WORKSPACE) -> tuple[list[Lead], str, int]:
        """One page of leads, the token of the next page ("" on the last), and the revision
        the page is as of (watch from it and nothing is missed)."""
        query = dataclasses.replace(query, filter=_scoped(query.filter, scope))
        query = rules.validate_list_query(query)
        after = decode_token(query)
        order_key = ORDER_KEYS[query.order_by]
        # One extra row tells whether another page follows without a second query.
        fetched, revision = self._store.page(query.filter, order_key, after, query.page_size + 1)
        leads = fetched[: _fitting([_approx_size(lead) for lead in fetched], query.page_size)]
        if len(leads) == len(fetched):
            return leads, "", revision
        last = leads[-1]
        position = (getattr(last, order_key), last.contact_phone,
                    last.business_scoped_user_id, last.workspace_id)
        return leads, encode_token(query, position), revision

    def list_events(self, contact_phone: str, workspace_id: str, business_scoped_user_id: str = "",
                    page_size: int = 0, page_token: str = "",
                    scope: Scope = EVERY_WORKSPACE) -> tuple[list[Event], str]:
        """One page of a lead's retained history, newest first, and the token of the next
        page ("" on the last). The lead is the stored one the key means, followed through
        merges and identity changes; for a key no stored lead holds, the events that
        carried that key (after an erasure, its deleted event)."""
        workspace_id = scoped_workspace(workspace_id, scope)
        key, size = rules.validate_history_query(contact_phone, business_scoped_user_id,
                                                 workspace_id, page_size, self._region)
        before = decode_history_token(key, page_token)
        # One extra event tells whether another page follows without a second query.
        fetched = self._store.history(key, identity.meant, before, size + 1)
        events = fetched[: _fitting([_approx_size(e.lead) for e in fetched if e.lead], size)]
        if len(events) == len(fetched):
            return events, ""
        return events, encode_history_token(key, events[-1].revision)

    def get_activity(self, workspace_id: str | None, time_zone: str = "", days: int = 0,
                     scope: Scope = EVERY_WORKSPACE) -> tuple[list[ActivityDay], str]:
        """What happened per calendar day in `time_zone`, oldest first, ending today by the
        service's clock; and the zone's name."""
        workspace_id = scoped_workspace(workspace_id, scope)
        zone, days = rules.validate_activity_query(workspace_id, time_zone, days)
        bounds = local_days(zone, self._clock(), days)
        # Summed per day by the database: each day a range of quarter-hours.
        rows = self._store.activity(workspace_id, [start for _, start in bounds])
        return per_day(bounds, rows), zone.key

    def watch_scope(self, workspace_id: str | None, scope: Scope = EVERY_WORKSPACE) -> str | None:
        """The workspace a watcher sees (None: every one), checked like ListLeads'."""
        return rules.validate_filter(_scoped(LeadFilter(workspace_id=workspace_id), scope)
                                     ).workspace_id

    def get_stats(self, lead_filter: LeadFilter, scope: Scope = EVERY_WORKSPACE) -> Stats:
        """Counts by temperature and state, and the mean score."""
        lead_filter = _scoped(lead_filter, scope)
        workspace_id = rules.validate_filter(lead_filter).workspace_id
        rows, revision = self._store.counts(workspace_id)
        return dataclasses.replace(stats_of(rows), revision=revision)


def _write_plan(tx: WriteTx, plan: identity.Plan, lead: Lead,
                now: int) -> list[tuple[Lead | None, Lead | None]]:
    """Write `lead` as the plan says, in an order that never holds a key twice: absorbed
    halves go first, robbed leads drop the phone, then the lead takes its keys. The lead
    counts change for every lead touched, so GetStats counts each person once. Returns
    (before, after) of each lead touched, for the change log."""
    deltas = CountDeltas()
    pairs: list[tuple[Lead | None, Lead | None]] = []
    for half in plan.absorbed:
        tx.delete_lead(half)
        deltas.change(half, None)
        pairs.append((half, None))
    for other in plan.robbed:
        left = dataclasses.replace(other, contact_phone="", updated_at=now,
                                   etag=rules.new_etag())
        tx.update_lead(left, was=other)
        deltas.change(other, left)
        pairs.append((other, left))
    if plan.old is None:
        tx.insert_lead(lead)
    else:
        tx.update_lead(lead, was=plan.old)
    for half in plan.absorbed:
        tx.move_history(half, into=lead)  # the person's history follows the merge
    deltas.change(plan.old, lead)
    tx.add_counts(deltas)
    # Activity from the base: a merge's halves are summed there already, so a merge adds
    # no lead and no messages; a robbed lead only loses its phone, which counts nothing.
    activity = ActivityDeltas()
    activity.change(plan.base, lead, now)
    tx.add_activity(activity)
    pairs.append((plan.old, lead))
    return pairs



def _scoped(lead_filter: LeadFilter, scope: Scope) -> LeadFilter:
    return dataclasses.replace(
        lead_filter, workspace_id=scoped_workspace(lead_filter.workspace_id, scope))


# 50 leads (or events) with every text at its limit would be ~4.7 MB, over gRPC's default
# 4 MiB message limit on the caller's side; a page stops early instead, and its token
# continues it.
_PAGE_BYTES = 3 * 1024 * 1024
_LEAD_OVERHEAD_BYTES = 200


def _approx_size(lead: Lead) -> int:
    # One encode of the texts joined: a third of the time of one per text, for a page of 50.
    texts = (lead.name or "", lead.business_type or "", lead.goals or "", *lead.pain_points)
    return _LEAD_OVERHEAD_BYTES + len("".join(texts).encode())


def _fitting(sizes: list[int], page_size: int) -> int:
    """How many items of `sizes` (their approximate sizes) make the page: at most
    page_size, and within _PAGE_BYTES."""
    total = 0
    for count, size in enumerate(sizes[:page_size]):
        total += size
        if total > _PAGE_BYTES and count > 0:
            return count
    return min(len(sizes), page_size)
