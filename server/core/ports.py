"""The ports of core: what the use cases need of storage, as Protocols.

The use cases (service.py), the import (importing.py) and the admin servicer depend on
these alone. storage/repository.py implements them over peewee (mypy checks it there), and
tests/support/memory_store.py in memory, for unit tests of the use cases; one contract
suite (tests/contract) holds both to the same behaviour.

A write is a unit of work: `Store.write(work)` runs `work(tx)` in one transaction and
returns its result once that committed, all of it or none. `work` may run more than once
(the store retries a lost insert race), so it reads what it needs through `tx`.
"""

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from server.core.activity import ActivityDeltas, ActivityRow
from server.core.changes import Change, Event
from server.core.counts import CountDeltas, CountRow
from server.core.domain import Lead, LeadFilter, LeadKey
from server.core.identity import Holders

_T = TypeVar("_T")
# ListLeads' position: the order key's value, contact_phone, BSUID, workspace_id.
Position = tuple[int, str, str, str]


class WriteTx(Protocol):
    """The operations of one write transaction. A stored lead is updated or deleted as
    lock_holders or lock_leads found it in this transaction."""

    def lock_keys(self, keys: Iterable[LeadKey]) -> None:
        """Hold every key of `keys` until the transaction ends, even one no lead holds:
        two writers naming one key run one after the other."""

    def lock_holders(self, key: LeadKey) -> Holders:
        """The stored leads holding `key`'s BSUID and phone, locked until the end."""

    def lock_leads(self, keys: Iterable[LeadKey]) -> list[Lead]:
        """The stored leads holding any key of `keys`, locked until the end."""

    def insert_lead(self, lead: Lead) -> None: ...
    def insert_leads(self, leads: Iterable[Lead]) -> None: ...

    def update_lead(self, lead: Lead, was: Lead | None = None) -> None:
        """Write `lead` over the stored lead found here as `was` (default: `lead`'s keys)."""

    def delete_lead(self, lead: Lead) -> None:
        """Delete the stored lead found here as `lead`."""

    def move_history(self, half: Lead, into: Lead) -> None:
        """Give the events of `half`, deleted here as a merge's absorbed half, to `into`
        (the survivor as written here), its deleted event too."""

    def add_counts(self, deltas: CountDeltas) -> None:
        """Change the lead counts (GetStats) at the transaction's end."""

    def add_activity(self, deltas: ActivityDeltas) -> None:
        """Add to the activity counts (GetActivity) at the transaction's end."""

    def append_events(self, changes: list[Change], at: int) -> list[Event]:
        """Log the write's events with the next revisions, each under the lead it tells of;
        called last in the transaction."""

    def erase_events(self, lead: Lead) -> None:
        """Remove the events of `lead`, deleted here (erasure); its deleted event, logged
        after this, belongs to no lead but is found by its keys."""

    def prune_events(self, through: int, limit: int) -> int:
        """Remove up to `limit` of the oldest events at or below revision `through`
        (remembered as pruned); how many went."""

    def find_request(self, key: LeadKey, request_id: str, since: int) -> Lead | None:
        """The lead `request_id` left, saved after `since` under either key of `key`."""

    def save_request(self, request_id: str, created_at: int, lead: Lead) -> None:
        """Remember what `request_id` left, under the lead's keys (replacing an older one)."""

    def prune_requests(self, created_up_to: int, limit: int) -> int:
        """Forget up to `limit` requests saved at or before `created_up_to`; how many went."""

    def delete_requests(self, key: LeadKey) -> None:
        """Forget every request saved under either key of `key`."""


class Store(Protocol):
    """The leads, their counts, activity and change log: reads, and writes as units of
    work."""

    def write(self, work: Callable[[WriteTx], _T]) -> _T:
        """Run `work` in one write transaction; its result once that committed."""

    def holders(self, key: LeadKey) -> Holders:
        """The stored leads holding `key`'s BSUID and phone (nothing locked)."""

    def page(self, lead_filter: LeadFilter, order_key: str, after: Position | None,
             limit: int) -> tuple[list[Lead], int]:
        """Up to `limit` leads by `order_key` descending, then contact_phone, BSUID and
        workspace_id descending, strictly after `after`; and the revision it is as of."""

    def counts(self, workspace_id: str | None) -> tuple[list[CountRow], int]:
        """The lead counts of one workspace or of all, and the revision they are as of."""

    def history(self, key: LeadKey, meant: Callable[[LeadKey, Holders], Lead | None],
                before: int | None, limit: int) -> list[Event]:
        """Up to `limit` events before revision `before` (None: the newest), newest first,
        of the stored lead `meant` chooses among `key`'s holders; with none, the events
        that carried either key of `key`."""

    def activity(self, workspace_id: str | None, starts: list[int]) -> list[ActivityRow]:
        """The activity summed per range of quarter-hours starts[i] to starts[i + 1]
        (excluded), a row per range whose bucket is its start."""

    def newest_past(self, at_up_to: int) -> int | None:
        """The revision of the newest event committed at or before `at_up_to`, if any."""

    def inactive(self, last_message_before: int, limit: int) -> list[LeadKey]:
        """The keys of up to `limit` leads silent since before `last_message_before`, the
        longest silent first."""
