"""The gRPC servicer: translates protobuf to service calls and results back, nothing more."""

import grpc

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert, status
from server.api.auth import caller_scope
from server.core.domain import ListQuery
from server.core.service import SarahService


class SarahServicer(sarah_pb2_grpc.SarahServiceServicer):
    def __init__(self, service: SarahService):
        self._service = service

    @status.mapped
    def GetState(self, request: pb.GetStateRequest,
                 context: grpc.ServicerContext) -> pb.Conversation:
        lead = self._service.get_state(request.contact_phone, request.workspace_id,
                                       caller_scope(), request.business_scoped_user_id)
        return convert.lead_to_proto(lead)

    @status.mapped
    def UpsertState(self, request: pb.UpsertStateRequest,
                    context: grpc.ServicerContext) -> pb.Conversation:
        lead = self._service.upsert_state(convert.patch_from_proto(request), caller_scope())
        return convert.lead_to_proto(lead)

    @status.mapped
    def ListLeads(self, request: pb.ListLeadsRequest,
                  context: grpc.ServicerContext) -> pb.ListLeadsResponse:
        query = ListQuery(
            filter=convert.filter_from_proto(request),
            order_by=request.order_by,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        leads, next_token = self._service.list_leads(query, caller_scope())
        return pb.ListLeadsResponse(
            leads=[convert.lead_to_proto(lead) for lead in leads], next_page_token=next_token
        )

    @status.mapped
    def GetStats(self, request: pb.GetStatsRequest,
                 context: grpc.ServicerContext) -> pb.GetStatsResponse:
        stats = self._service.get_stats(convert.filter_from_proto(request), caller_scope())
        return convert.stats_to_proto(stats)

    @status.mapped
    def DeleteState(self, request: pb.DeleteStateRequest,
                    context: grpc.ServicerContext) -> pb.DeleteStateResponse:
        deleted = self._service.delete_state(request.contact_phone, request.workspace_id,
                                             caller_scope(), request.business_scoped_user_id)
        return pb.DeleteStateResponse(deleted=deleted)

    @status.mapped
    def ChangeIdentity(self, request: pb.ChangeIdentityRequest,
                       context: grpc.ServicerContext) -> pb.Conversation:
        lead = self._service.change_identity(convert.identity_change_from_proto(request),
                                             caller_scope())
        return convert.lead_to_proto(lead)
