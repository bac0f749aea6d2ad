"""Importing the earlier backend's conversations, their timestamps kept, a batch at a time."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.core import rules
from server.core.counts import CountDeltas
from server.core.domain import Lead, Patch
from server.core.errors import InvalidArgument

if TYPE_CHECKING:
    from server.storage.repository import Repository, WriteTx

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


def import_conversations(repo: Repository, region: str,
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
            outcomes.append(ImportOutcome("rejected", item.patch.contact_phone, str(exc)))
    stored = repo.write(functools.partial(_merge_batch, valid)) if valid else []
    merged = iter(zip(valid, stored, strict=True))
    results = [outcome or _stored_outcome(*next(merged)) for outcome in outcomes]
    _LOGGER.info("import of %d conversations: %s", len(results),
                 ", ".join(f"{w} {sum(r.outcome == w for r in results)}" for w in _WORDS))
    return results


def _merge_batch(leads: list[Lead], tx: WriteTx) -> list[tuple[bool, bool]]:
    """Merge each lead in order over what is stored; (existed, written) per lead.

    The batch's stored leads come in a few queries, the merges run in memory, and only
    what changed is written: importing a batch that is already held costs one read, not
    one query per lead. A later lead with the same key as an earlier one sees the earlier
    one's merge.
    """
    before = tx.lock_leads(list({(lead.workspace_id, lead.contact_phone) for lead in leads}))
    current = dict(before)
    changed: set[tuple[str, str]] = set()
    outcomes = []
    for lead in leads:
        key = (lead.workspace_id, lead.contact_phone)
        merged = rules.merge_imported(current.get(key), lead)
        outcomes.append((key in current, merged is not None))
        if merged is not None:
            current[key] = merged
            changed.add(key)
    deltas = CountDeltas()
    for key in changed:
        deltas.change(before.get(key), current[key])
    tx.add_counts(deltas)
    tx.insert_leads(current[key] for key in changed - before.keys())
    for key in changed & before.keys():
        tx.update_lead(current[key])
    return outcomes


def _stored_outcome(lead: Lead, existed_written: tuple[bool, bool]) -> ImportOutcome:
    existed, written = existed_written
    word = ("merged" if written else "unchanged") if existed else "imported"
    return ImportOutcome(word, lead.contact_phone)
