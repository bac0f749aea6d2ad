"""SarahAdminService: importing the earlier backend's conversations, timestamps kept.

The use case (core/importing.py) takes plain values; the servicer only translates.
"""

from typing import Literal

import grpc
from google.protobuf import timestamp_pb2

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert, status
from server.api.auth import caller_scope
from server.core import scope
from server.core.importing import Imported, import_conversations
from server.core.ports import Store

_Stamp = Literal["created_at", "updated_at", "last_message_at"]


def _micros(message: pb.Conversation, field: _Stamp) -> int | None:
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToMicroseconds() if message.HasField(field) else None


def _imported_from_proto(c: pb.Conversation) -> Imported:
    # The conversation's fields are those of an upsert that sets every one of them, so the
    # upsert's own translation (and with it its validation) applies unchanged.
    as_upsert = pb.UpsertStateRequest(
        contact_phone=c.contact_phone, workspace_id=c.workspace_id, state=c.state,
        lead_score=c.lead_score, lead_temperature=c.lead_temperature,
        extracted_data=c.extracted_data, language=c.language, message_count=c.message_count,
        business_scoped_user_id=c.business_scoped_user_id,
        # An export of before BSUIDs has neither: "" is what the lead holds then.
        parent_business_scoped_user_id=c.parent_business_scoped_user_id,
        username=c.username,
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
    def ImportConversations(
        self, request: pb.ImportConversationsRequest, context: grpc.ServicerContext
    ) -> pb.ImportConversationsResponse:
        scope.require_every_workspace(caller_scope())
        items = [_imported_from_proto(c) for c in request.conversations]
        outcomes = import_conversations(self._store, self._region, items)
        return pb.ImportConversationsResponse(results=[
            pb.ImportResult(outcome=pb.ImportOutcome.Value(o.outcome),
                            contact_phone=o.contact_phone, reason=o.reason,
                            business_scoped_user_id=o.business_scoped_user_id)
            for o in outcomes
        ])
