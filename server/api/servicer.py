"""The gRPC servicer: translates protobuf to service calls and results back, nothing more."""

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert, status
from server.core.domain import ListQuery
from server.core.service import SarahService


class SarahServicer(sarah_pb2_grpc.SarahServiceServicer):
    def __init__(self, service: SarahService):
        self._service = service

    @status.mapped
    def GetState(self, request: pb.GetStateRequest, context) -> pb.Conversation:  # type: ignore[no-untyped-def]
        lead = self._service.get_state(request.contact_phone, request.workspace_id)
        return convert.lead_to_proto(lead)

    @status.mapped
    def UpsertState(self, request: pb.UpsertStateRequest, context) -> pb.Conversation:  # type: ignore[no-untyped-def]
        lead = self._service.upsert_state(convert.patch_from_proto(request))
        return convert.lead_to_proto(lead)

    @status.mapped
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

    @status.mapped
    def GetStats(self, request: pb.GetStatsRequest, context) -> pb.GetStatsResponse:  # type: ignore[no-untyped-def]
        stats = self._service.get_stats(convert.filter_from_proto(request))
        return convert.stats_to_proto(stats)

    @status.mapped
    def DeleteState(self, request: pb.DeleteStateRequest, context) -> pb.DeleteStateResponse:  # type: ignore[no-untyped-def]
        deleted = self._service.delete_state(request.contact_phone, request.workspace_id)
        return pb.DeleteStateResponse(deleted=deleted)
