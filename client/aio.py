"""AsyncSarahClient: the asyncio twin of SarahClient, over grpc.aio."""

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc

from client.channels import aio_channel, channel_options, check_token_transport
from client.options import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    ChannelOption,
    ClientSettings,
    RetryPolicy,
)
from client.requests import activity_request, build, next_page
from client.watching import DEFAULT_GIVE_UP_AFTER, Backoff, WatchPosition
from sarah.v1 import sarah_pb2 as pb
from sarah.v1.sarah_pb2_grpc import SarahAdminServiceStub, SarahServiceStub

_LOGGER = logging.getLogger(__name__)


class AsyncSarahClient:
    """SarahClient for asyncio code: the same methods and settings, each awaited.

    Create it inside the running event loop (grpc.aio channels belong to one loop) and use
    it with ``async with``, or await close(). A failed call raises grpc.aio.AioRpcError.
    `credentials`, `options` and the token rule are SarahClient's; `interceptors` are
    grpc.aio.ClientInterceptor instances.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[ChannelOption] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        allow_plaintext_token: bool = False,
    ) -> None:
        self.settings = ClientSettings(target, token, timeout, retry or RetryPolicy())
        check_token_transport(self.settings, credentials is not None, allow_plaintext_token)
        self._channel = aio_channel(
            self.settings, credentials, channel_options(self.settings, options), interceptors)
        self._stub = SarahServiceStub(self._channel)
        self._admin = SarahAdminServiceStub(self._channel)

    async def __aenter__(self) -> "AsyncSarahClient":
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def get_state(
        self, request: pb.GetStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """The lead's stored conversation, or the unsaved default for an unknown lead.

        Name the lead by contact_phone, business_scoped_user_id, or both."""
        return await self._stub.GetState(
            build(pb.GetStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def upsert_state(
        self, request: pb.UpsertStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """Create or partially update a conversation; returns it as stored."""
        return await self._stub.UpsertState(
            build(pb.UpsertStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def list_leads(
        self, request: pb.ListLeadsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ListLeadsResponse:
        """One page of leads; see iter_leads for all of them."""
        return await self._stub.ListLeads(
            build(pb.ListLeadsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def iter_leads(
        self, request: pb.ListLeadsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> AsyncIterator[pb.Conversation]:
        """Every matching lead, one page in memory at a time; each page has its own deadline."""
        page_request: pb.ListLeadsRequest | None = build(pb.ListLeadsRequest, request, fields)
        while page_request is not None:
            response = await self.list_leads(page_request, timeout=timeout)
            for lead in response.leads:
                yield lead
            page_request = next_page(page_request, response)

    async def get_stats(
        self, request: pb.GetStatsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.GetStatsResponse:
        """Counts by temperature and state, and the mean score."""
        return await self._stub.GetStats(
            build(pb.GetStatsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def list_events(
        self, request: pb.ListEventsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ListEventsResponse:
        """One page of a lead's history, newest first; see iter_events for all of it.

        Name the lead by contact_phone, business_scoped_user_id, or both."""
        return await self._stub.ListEvents(
            build(pb.ListEventsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def iter_events(
        self, request: pb.ListEventsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> AsyncIterator[pb.LeadEvent]:
        """A lead's whole retained history, newest first, one page in memory at a time."""
        page_request: pb.ListEventsRequest | None = build(pb.ListEventsRequest, request, fields)
        while page_request is not None:
            response = await self.list_events(page_request, timeout=timeout)
            for event in response.events:
                yield event
            page_request = next_page(page_request, response)

    async def get_activity(
        self, request: pb.GetActivityRequest | None = None, /, *,
        workspace_id: str | None = None, time_zone: str | None = None, days: int | None = None,
        timeout: float | None = None,
    ) -> pb.GetActivityResponse:
        """Counts per local calendar day, oldest first, ending today in time_zone (an IANA
        name, default Asia/Jakarta) over `days` days (1 to 366, default 30); every workspace
        the caller may see unless workspace_id names one."""
        return await self._stub.GetActivity(
            activity_request(request, workspace_id, time_zone, days),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def delete_state(
        self, request: pb.DeleteStateRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.DeleteStateResponse:
        """Erase a lead, found by either key; `deleted` tells whether there was one."""
        return await self._stub.DeleteState(
            build(pb.DeleteStateRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def change_identity(
        self, request: pb.ChangeIdentityRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.Conversation:
        """Move a lead from its old key (contact_phone and/or business_scoped_user_id) to a new
        one (new_contact_phone and/or new_business_scoped_user_id); returns it as stored.
        NOT_FOUND when neither key finds a lead."""
        return await self._stub.ChangeIdentity(
            build(pb.ChangeIdentityRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def import_conversations(
        self, request: pb.ImportConversationsRequest | None = None, /, *,
        timeout: float | None = None, **fields: Any,
    ) -> pb.ImportConversationsResponse:
        """Admin: import up to 500 conversations keeping their timestamps; one result each."""
        return await self._admin.ImportConversations(
            build(pb.ImportConversationsRequest, request, fields),
            timeout=self.settings.deadline(timeout), metadata=self.settings.metadata)

    async def watch(
        self, workspace_id: str | None = None, since_revision: int | None = None, *,
        heartbeats: bool = False, give_up_after: float | None = DEFAULT_GIVE_UP_AFTER,
    ) -> AsyncGenerator[pb.LeadEvent, None]:
        """SarahClient.watch for asyncio: the same resumption, retries and errors."""
        position = WatchPosition(workspace_id, since_revision)
        if since_revision is None:
            position.revision = (await self.get_stats(position.stats_request())).revision
        backoff = Backoff(self.settings.retry, give_up_after)
        while True:
            position.start_attempt()
            call = self._stub.WatchLeads(position.request(), metadata=self.settings.metadata)
            ended: grpc.RpcError | None = None
            try:
                async for event in call:
                    backoff.reset()
                    if position.accept(event) and (heartbeats or event.kind != pb.heartbeat):
                        yield event
            except grpc.RpcError as err:
                if not position.retryable(err):
                    raise
                ended = err
            finally:
                call.cancel()
            await asyncio.sleep(backoff.next_delay(ended))
