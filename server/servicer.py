"""The gRPC servicer: translates protobuf to service calls and results back, nothing more."""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server import convert, status
from server.domain import ListQuery
from server.service import SarahService

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _statuses(handler: _Handler) -> _Handler:
    """Every exception of a handler ends the call with a mapped status, never UNKNOWN."""

    @functools.wraps(handler)
    def wrapper(self, request, context):  # type: ignore[no-untyped-def]
        try:
            return handler(self, request, context)
        except Exception as exc:  # noqa: BLE001 - status.abort maps every kind
            status.abort(context, exc)

    return wrapper  # type: ignore[return-value]


class SarahServicer(sarah_pb2_grpc.SarahServiceServicer):
    def __init__(self, service: SarahService):
        self._service = service

    @_statuses
    def GetState(self, request: pb.GetStateRequest, context) -> pb.Conversation:  # type: ignore[no-untyped-def]
        lead = self._service.get_state(request.contact_phone, request.workspace_id)
        return convert.lead_to_proto(lead)

    @_statuses
    def UpsertState(self, request: pb.UpsertStateRequest, context) -> pb.Conversation:  # type: ignore[no-untyped-def]
        lead = self._service.upsert_state(convert.patch_from_proto(request))
        return convert.lead_to_proto(lead)

    @_statuses
    def ListLeads(self, request: pb.ListLeadsRequest, context) -> pb.ListLeadsResponse:  # type: ignore[no-untyped-def]
        query = ListQuery(
            filter=convert.filter_from_proto(request),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        leads, next_token = self._service.list_leads(query)
        return pb.ListLeadsResponse(
            leads=[convert.lead_to_proto(lead) for lead in leads], next_page_token=next_token
        )

    @_statuses
    def GetStats(self, request: pb.GetStatsRequest, context) -> pb.GetStatsResponse:  # type: ignore[no-untyped-def]
        stats = self._service.get_stats(convert.filter_from_proto(request))
        return convert.stats_to_proto(stats)

    @_statuses
    def DeleteState(self, request: pb.DeleteStateRequest, context) -> pb.DeleteStateResponse:  # type: ignore[no-untyped-def]
        deleted = self._service.delete_state(request.contact_phone, request.workspace_id)
        return pb.DeleteStateResponse(deleted=deleted)
