"""SarahAdminService: importing the earlier backend's conversations, timestamps kept.

The use case (`import_conversations`) takes plain values; the servicer only translates.
"""

import logging
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert, status
from server.api.auth import caller_scope
from server.core import rules, scope
from server.core.domain import Lead, Patch
from server.core.errors import InvalidArgument
from server.storage.store import Store

_LOGGER = logging.getLogger(__name__)

MAX_IMPORT_BATCH = 500


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


def import_conversations(store: Store, region: str, items: list[Imported]) -> list[ImportOutcome]:
    """Validate each conversation, merge the valid ones into storage; outcomes in order."""
    if len(items) > MAX_IMPORT_BATCH:
        raise InvalidArgument(
            [("conversations", f"at most {MAX_IMPORT_BATCH} per call, got {len(items)}")])
    outcomes: list[ImportOutcome | None] = []
    valid: list[Lead] = []
    for item in items:
        try:
            valid.append(rules.imported_lead(
                item.patch, item.created_at, item.updated_at, item.last_message_at, region))
            outcomes.append(None)  # filled in once the store has merged it
        except InvalidArgument as exc:
            outcomes.append(ImportOutcome("rejected", item.patch.contact_phone, str(exc)))
    stored = store.merge_many(valid, rules.merge_imported) if valid else []
    merged = iter(zip(valid, stored, strict=True))
    results = [outcome or _stored_outcome(*next(merged)) for outcome in outcomes]
    _LOGGER.info("import of %d conversations: %s", len(results),
                 ", ".join(f"{w} {sum(r.outcome == w for r in results)}" for w in _WORDS))
    return results


_WORDS = ("imported", "merged", "unchanged", "rejected")


def _stored_outcome(lead: Lead, existed_written: tuple[bool, bool]) -> ImportOutcome:
    existed, written = existed_written
    word = ("merged" if written else "unchanged") if existed else "imported"
    return ImportOutcome(word, lead.contact_phone)


def _micros(message: pb.Conversation, field: str) -> int | None:
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToMicroseconds() if message.HasField(field) else None


def _imported_from_proto(c: pb.Conversation) -> Imported:
    # The conversation's fields are those of an upsert that sets every one of them, so the
    # upsert's own translation (and with it its validation) applies unchanged.
    as_upsert = pb.UpsertStateRequest(
        contact_phone=c.contact_phone, workspace_id=c.workspace_id, state=c.state,
        lead_score=c.lead_score, lead_temperature=c.lead_temperature,
        extracted_data=c.extracted_data, language=c.language, message_count=c.message_count,
    )
    return Imported(
        patch=convert.patch_from_proto(as_upsert),
        created_at=_micros(c, "created_at"),
        updated_at=_micros(c, "updated_at"),
        last_message_at=_micros(c, "last_message_at"),
    )


class SarahAdminServicer(sarah_pb2_grpc.SarahAdminServiceServicer):
    """Operators' RPCs; registered on the gRPC port only, never routed by Envoy."""

    def __init__(self, store: Store, default_region: str = "ID"):
        self._store = store
        self._region = default_region

    @status.mapped
    def ImportConversations(  # type: ignore[no-untyped-def]
        self, request: pb.ImportConversationsRequest, context
    ) -> pb.ImportConversationsResponse:
        scope.require_every_workspace(caller_scope())
        items = [_imported_from_proto(c) for c in request.conversations]
        outcomes = import_conversations(self._store, self._region, items)
        return pb.ImportConversationsResponse(results=[
            pb.ImportResult(outcome=pb.ImportOutcome.Value(o.outcome),
                            contact_phone=o.contact_phone, reason=o.reason)
            for o in outcomes
        ])
