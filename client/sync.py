"""SarahClient: the blocking client of SarahService and SarahAdminService."""

import logging
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc

from client.channels import Interceptor, channel_options, check_token_transport, sync_channel
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


class SarahClient:
    """One channel to a SarahService server; one method per RPC.

    Each method takes the generated request message, or its fields as keywords
    (``client.get_state(contact_phone="0812-3456-7890")``), and returns the generated
    response. Every call has a deadline (`timeout` seconds, per client or per call) and is
    retried by gRPC on UNAVAILABLE; a failed call raises grpc.RpcError. Use it as a context
    manager, or call close().

    The channel is TLS with `credentials` (``grpc.ssl_channel_credentials()``, with
    ``root_certificates=`` for a private CA). `options` are gRPC channel arguments on top of
    the client's own (a key given here replaces the client's); `interceptors` see every
    call. A `token` goes to a host beyond loopback only over TLS: without credentials that
    raises PlaintextTokenRefused, unless `allow_plaintext_token` says the network is trusted.
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
        interceptors: Sequence[Interceptor] = (),
        allow_plaintext_token: bool = False,
    ) -> None:
        self.settings = ClientSettings(target, token, timeout, retry or RetryPolicy())
        check_token_transport(self.settings, credentials is not None, allow_plaintext_token)
        self._channel = sync_channel(
            self.settings, credentials, channel_options(self.settings, options), interceptors)
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

    def watch(
        self, workspace_id: str | None = None, since_revision: int | None = None, *,
        heartbeats: bool = False, give_up_after: float | None = DEFAULT_GIVE_UP_AFTER,
    ) -> Generator[pb.LeadEvent, None, None]:
        """Every change to the leads after `since_revision` (from now on if None), as it
        commits, for as long as it is read; only `workspace_id`'s if given.

        A dropped stream (a server restart, a lost connection, a watcher dropped for falling
        behind) is resumed after the last revision seen, waiting as the client's RetryPolicy
        says: nothing is skipped and nothing yielded twice. After `give_up_after` seconds of
        failed attempts in a row (None: never) it raises WatchGaveUp; a revision the server
        no longer retains raises RevisionTooOld: list again and watch from there. Heartbeats
        are yielded only if `heartbeats` is true. Stop by breaking out of the loop."""
        position = WatchPosition(workspace_id, since_revision)
        if since_revision is None:
            # Pin "now" to a revision, so that a stream dropped before its first event is
            # still resumed exactly.
            position.revision = self.get_stats(position.stats_request()).revision
        backoff = Backoff(self.settings.retry, give_up_after)
        while True:
            position.start_attempt()
            call = self._stub.WatchLeads(position.request(), metadata=self.settings.metadata)
            ended: grpc.RpcError | None = None
            try:
                for event in call:
                    backoff.reset()
                    if position.accept(event) and (heartbeats or event.kind != pb.heartbeat):
                        yield event
            except grpc.RpcError as err:
                if not position.retryable(err):
                    raise
                ended = err
            finally:
                call.cancel()
            time.sleep(backoff.next_delay(ended))
