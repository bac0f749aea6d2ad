"""Importing the earlier backend's conversations, their timestamps kept, a batch at a time."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, replace

from server.core import identity, rules
from server.core.activity import ActivityDeltas
from server.core.changes import changes_of
from server.core.counts import CountDeltas
from server.core.domain import Lead, LeadKey, Patch
from server.core.errors import InvalidArgument
from server.core.ports import Store, WriteTx

_LOGGER = logging.getLogger(__name__)

MAX_IMPORT_BATCH = 500
_WORDS = ("imported", "merged", "unchanged", "rejected")


@dataclass(frozen=True)
class Imported:
    """One conversation to import: every field as a patch, and its original timestamps."""

    patch: Patch
    created_at: int | None
    updated_at: int | None
    last_message_at: int | None


@dataclass(frozen=True)
class ImportOutcome:
    """What became of one imported conversation."""

    outcome: str  # imported, merged, unchanged or rejected (the ImportOutcome words)
    contact_phone: str
    reason: str = ""
    business_scoped_user_id: str = ""


def import_conversations(store: Store, region: str,
                         items: list[Imported]) -> list[ImportOutcome]:
    """Validate each conversation, merge the valid ones into storage; outcomes in order.

    One write transaction covers the batch, so a failure leaves none of it written and
    the caller can send the batch again.
    """
    if len(items) > MAX_IMPORT_BATCH:
        raise InvalidArgument(
            [("conversations", f"at most {MAX_IMPORT_BATCH} per call, got {len(items)}")])
    outcomes: list[ImportOutcome | None] = []
    valid: list[Lead] = []
    for item in items:
        try:
            valid.append(rules.imported_lead(
                item.patch, item.created_at, item.updated_at, item.last_message_at, region))
            outcomes.append(None)  # filled in once the batch is merged
        except InvalidArgument as exc:
            outcomes.append(ImportOutcome("rejected", item.patch.contact_phone, str(exc),
                                          item.patch.business_scoped_user_id))
    existed_written = store.write(functools.partial(_merge_batch, valid)) if valid else []
    merged = iter(zip(valid, existed_written, strict=True))
    results = [outcome or _stored_outcome(*next(merged)) for outcome in outcomes]
    _LOGGER.info("import of %d conversations: %s", len(results),
                 ", ".join(f"{w} {sum(r.outcome == w for r in results)}" for w in _WORDS))
    return results


def _merge_batch(leads: list[Lead], tx: WriteTx) -> list[tuple[bool, bool]]:
    """Merge each lead in order over what is stored; (existed, written) per lead.

    The batch's stored leads come in a few queries, the merges run in memory, and only
    what changed is written: importing a batch that is already held costs one read, not
    one query per lead. A later lead with a key of an earlier one sees the earlier one's
    merge. Which stored lead an imported one means, and the merging of two halves or a
    moved phone number, follow the identity rules of every write.
    """
    now = time.time_ns() // 1000
    keys = [lead.key for lead in leads]
    tx.lock_keys(keys)
    book = _Book(tx.lock_leads(keys))
    activity = ActivityDeltas()
    outcomes = []
    for lead in leads:
        holders = book.holders(lead.key)
        plan = identity.settle(identity.meant(lead.key, holders), lead.contact_phone,
                               lead.business_scoped_user_id, holders)
        for half in plan.absorbed:
            assert plan.old is not None  # a half merges into a lead
            book.absorb(half, into=plan.old)
        for other in plan.robbed:
            book.put(other, replace(other, contact_phone=""))
        merged = rules.merge_imported(plan.base, lead) or plan.base
        assert merged is not None
        book.put(plan.old, merged)
        # A lead new here is counted when the earlier backend says things happened; one
        # already here (or earlier in the batch), as any write is, now.
        if plan.base is None:
            activity.imported(merged, now)
        else:
            activity.change(plan.base, merged, now)
        written = merged != plan.old or bool(plan.absorbed or plan.robbed)
        outcomes.append((plan.old is not None, written))
    book.write(tx, activity, now)
    return outcomes


class _Book:
    """The batch's leads in memory: each stored one as it was and as it is now."""

    def __init__(self, stored: list[Lead]):
        self._before: list[Lead | None] = list(stored)
        self._now: list[Lead | None] = list(stored)
        self._into: dict[int, int] = {}  # slot of an absorbed half -> slot it merged into

    def _slot(self, lead: Lead) -> int:
        return next(i for i, now in enumerate(self._now) if identity.same_lead(now, lead))

    def holders(self, key: LeadKey) -> identity.Holders:
        def holding(field: str, value: str) -> Lead | None:
            return next((lead for lead in self._now if lead is not None and value
                         and lead.workspace_id == key.workspace_id
                         and getattr(lead, field) == value), None)

        return identity.Holders(
            by_bsuid=holding("business_scoped_user_id", key.business_scoped_user_id),
            by_phone=holding("contact_phone", key.contact_phone))

    def put(self, was: Lead | None, lead: Lead | None) -> None:
        """Replace `was` (None: nothing, a new lead) by `lead` (None: removed)."""
        if was is None:
            self._before.append(None)
            self._now.append(lead)
        else:
            self._now[self._slot(was)] = lead

    def absorb(self, half: Lead, into: Lead) -> None:
        """Remove `half`, merged into `into` (whose history it joins)."""
        slot = self._slot(half)
        self._into[slot] = self._slot(into)
        self._now[slot] = None

    def _survivor(self, slot: int) -> Lead:
        """The lead an absorbed slot ended in (it may have been absorbed in turn)."""
        while (lead := self._now[slot]) is None:
            slot = self._into[slot]
        return lead

    def write(self, tx: WriteTx, activity: ActivityDeltas, now_us: int) -> None:
        """Write what changed: removals, then updates that only give keys up, then the
        others, then new leads, so that no two rows ever hold one key; then the history
        of each stored half goes to the lead it merged into."""
        deltas = CountDeltas()
        changed = [(b, n) for b, n in zip(self._before, self._now, strict=True) if b != n]
        for before, now in changed:
            deltas.change(before, now)
            if before is not None and now is None:
                tx.delete_lead(before)
        updates = [(b, n) for b, n in changed if b is not None and n is not None]
        updates.sort(key=lambda pair: not _gives_up_only(*pair))
        for before, now in updates:
            tx.update_lead(now, was=before)
        tx.insert_leads(n for b, n in changed if b is None and n is not None)
        for slot, into in self._into.items():
            half = self._before[slot]
            if half is not None:  # a lead new in this batch has no history yet
                tx.move_history(half, into=self._survivor(into))
        tx.add_counts(deltas)
        tx.add_activity(activity)
        tx.append_events(changes_of(changed), now_us)  # last: changelog.py


def _gives_up_only(before: Lead, now: Lead) -> bool:
    return all(new in ("", old) for old, new in (
        (before.contact_phone, now.contact_phone),
        (before.business_scoped_user_id, now.business_scoped_user_id)))


def _stored_outcome(lead: Lead, existed_written: tuple[bool, bool]) -> ImportOutcome:
    existed, written = existed_written
    word = ("merged" if written else "unchanged") if existed else "imported"
    return ImportOutcome(word, lead.contact_phone,
                         business_scoped_user_id=lead.business_scoped_user_id)
