"""SarahClient: the blocking client of SarahService and SarahAdminService."""

import logging
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import grpc

from client.options import DEFAULT_TARGET, DEFAULT_TIMEOUT, ClientSettings, RetryPolicy
from client.requests import activity_request, build, next_page
from sarah.v1 import sarah_pb2 as pb
from sarah.v1.sarah_pb2_grpc import SarahAdminServiceStub, SarahServiceStub

_LOGGER = logging.getLogger(__name__)


class SarahClient:
    """One channel to a SarahService server; one method per RPC.

    Each method takes the generated request message, or its fields as keywords
    (``client.get_state(contact_phone="0812-3456-7890")``), and returns the generated
    response. Every call has a deadline (`timeout` seconds, per client or per call) and is
    retried by gRPC on UNAVAILABLE; a failed call raises grpc.RpcError. Use it as a context
    manager, or call close().
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.settings = ClientSettings(target, token, timeout, retry or RetryPolicy())
        options = self.settings.channel_options()
        self._channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._stub = SarahServiceStub(self._channel)
        self._admin = SarahAdminServiceStub(self._channel)

    def __enter__(self) -> "SarahClient":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def get_state(
        self, request: pb.GetStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """The lead's stored conversation, or the unsaved default for an unknown lead.

        Name the lead by contact_phone, business_scoped_user_id, or both."""
        return self._stub.GetState(
            build(pb.GetStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def upsert_state(
        self, request: pb.UpsertStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """Create or partially update a conversation; returns it as stored."""
        return self._stub.UpsertState(
            build(pb.UpsertStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def list_leads(
        self, request: pb.ListLeadsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ListLeadsResponse:
        """One page of leads; see iter_leads for all of them."""
        return self._stub.ListLeads(
            build(pb.ListLeadsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def iter_leads(
        self, request: pb.ListLeadsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> Iterator[pb.Conversation]:
        """Every matching lead, one page in memory at a time; each page has its own deadline."""
        page_request: pb.ListLeadsRequest | None = build(pb.ListLeadsRequest, request, fields)
        while page_request is not None:
            response = self.list_leads(page_request, timeout=timeout)
            yield from response.leads
            page_request = next_page(page_request, response)

    def get_stats(
        self, request: pb.GetStatsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.GetStatsResponse:
        """Counts by temperature and state, and the mean score."""
        return self._stub.GetStats(
            build(pb.GetStatsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def list_events(
        self, request: pb.ListEventsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ListEventsResponse:
        """One page of a lead's history, newest first; see iter_events for all of it.

        Name the lead by contact_phone, business_scoped_user_id, or both."""
        return self._stub.ListEvents(
            build(pb.ListEventsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def iter_events(
        self, request: pb.ListEventsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> Iterator[pb.LeadEvent]:
        """A lead's whole retained history, newest first, one page in memory at a time."""
        page_request: pb.ListEventsRequest | None = build(pb.ListEventsRequest, request, fields)
        while page_request is not None:
            response = self.list_events(page_request, timeout=timeout)
            yield from response.events
            page_request = next_page(page_request, response)

    def get_activity(
        self, request: pb.GetActivityRequest | None = None, /, *,
        workspace_id: str | None = None, time_zone: str | None = None, days: int | None = None,
        timeout: float | None = None,
    ) -> pb.GetActivityResponse:
        """Counts per local calendar day, oldest first, ending today in time_zone (an IANA
        name, default Asia/Jakarta) over `days` days (1 to 366, default 30); every workspace
        the caller may see unless workspace_id names one."""
        return self._stub.GetActivity(
            activity_request(request, workspace_id, time_zone, days),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def delete_state(
        self, request: pb.DeleteStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.DeleteStateResponse:
        """Erase a lead, found by either key; `deleted` tells whether there was one."""
        return self._stub.DeleteState(
            build(pb.DeleteStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def change_identity(
        self, request: pb.ChangeIdentityRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """Move a lead from its old key (contact_phone and/or business_scoped_user_id) to a new
        one (new_contact_phone and/or new_business_scoped_user_id); returns it as stored.
        NOT_FOUND when neither key finds a lead."""
        return self._stub.ChangeIdentity(
            build(pb.ChangeIdentityRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    def import_conversations(
        self, request: pb.ImportConversationsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ImportConversationsResponse:
        """Admin: import up to 500 conversations keeping their timestamps; one result each."""
        return self._admin.ImportConversations(
            build(pb.ImportConversationsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)
