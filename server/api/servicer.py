"""The gRPC servicer: translates protobuf to service calls and results back, nothing more."""

from collections.abc import Iterator

import grpc

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert, status
from server.api.auth import caller_scope
from server.core.delivery import Hub
from server.core.domain import ListQuery
from server.core.service import SarahService


class SarahServicer(sarah_pb2_grpc.SarahServiceServicer):
    def __init__(self, service: SarahService, hub: Hub):
        self._service = service
        self._hub = hub

    def WatchLeads(self, request: pb.WatchLeadsRequest,
                   context: grpc.ServicerContext) -> Iterator[pb.LeadEvent]:
        # A stream's errors surface while it is iterated, so they are mapped here rather
        # than by status.mapped.
        try:
            workspace = self._service.watch_scope(
                request.workspace_id if request.HasField("workspace_id") else None,
                caller_scope())
            since = request.since_revision if request.HasField("since_revision") else None
            subscription = self._hub.watch(workspace, since)
            # A caller that hangs up ends the stream at once, not at its next heartbeat.
            context.add_callback(subscription.close)
            # The key, the workspace and since_revision passed: say so now. grpcio would
            # send the headers with the first event, so through Envoy a quiet watch got no
            # 200 (and a browser's EventSource no onopen) until the 15 s heartbeat.
            context.send_initial_metadata(())
            for event in subscription:
                yield convert.event_to_proto(event)
        except Exception as exc:  # noqa: BLE001 - abort() maps every kind
            status.abort(context, exc)

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
        leads, next_token, revision = self._service.list_leads(query, caller_scope())
        return convert.list_to_proto(leads, next_token, revision)

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

    @status.mapped
    def ListEvents(self, request: pb.ListEventsRequest,
                   context: grpc.ServicerContext) -> pb.ListEventsResponse:
        events, next_token = self._service.list_events(
            request.contact_phone, request.workspace_id, request.business_scoped_user_id,
            request.page_size, request.page_token, caller_scope())
        return pb.ListEventsResponse(events=[convert.event_to_proto(e) for e in events],
                                     next_page_token=next_token)

    @status.mapped
    def GetActivity(self, request: pb.GetActivityRequest,
                    context: grpc.ServicerContext) -> pb.GetActivityResponse:
        workspace = request.workspace_id if request.HasField("workspace_id") else None
        days, zone = self._service.get_activity(workspace, request.time_zone, request.days,
                                                caller_scope())
        return convert.activity_to_proto(days, zone)
