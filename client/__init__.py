"""Client side of SarahService: SarahClient, its asyncio twin, and the generated stubs.

    from client import SarahClient

    with SarahClient("127.0.0.1:50051") as sarah:
        lead = sarah.get_state(contact_phone="0812-3456-7890")
"""

from client.aio import AsyncSarahClient
from client.errors import describe
from client.options import DEFAULT_TARGET, DEFAULT_TIMEOUT, RetryPolicy
from client.sync import SarahClient
from client.watching import RevisionTooOld, WatchGaveUp
from sarah.v1 import sarah_pb2 as messages
from sarah.v1.sarah_pb2_grpc import SarahAdminServiceStub, SarahServiceStub

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "AsyncSarahClient",
    "RetryPolicy",
    "RevisionTooOld",
    "SarahAdminServiceStub",
    "SarahClient",
    "SarahServiceStub",
    "WatchGaveUp",
    "describe",
    "messages",
]
