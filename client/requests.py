"""Building request messages, the same for the blocking and the asyncio client."""

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from sarah.v1 import sarah_pb2 as pb

_Request = TypeVar("_Request", bound=Message)
# The requests that page with page_token, and their responses with next_page_token.
_PagedRequest = TypeVar("_PagedRequest", pb.ListLeadsRequest, pb.ListEventsRequest)
_PagedResponse = pb.ListLeadsResponse | pb.ListEventsResponse

# GetActivity's defaults as the contract states them; the client sends them explicitly so
# that --help can show them.
DEFAULT_TIME_ZONE = "Asia/Jakarta"
DEFAULT_DAYS = 30


def build(kind: type[_Request], request: _Request | None, fields: Mapping[str, Any]) -> _Request:
    """The request as given, or one of `kind` built from keyword fields (not both).

    Keyword fields take what the message constructor takes, enum words included:
    ``build(pb.ListLeadsRequest, None, {"temperature": "hot"})``.
    """
    if request is not None:
        if fields:
            raise TypeError(f"pass a {kind.__name__} or keyword fields, not both")
        return request
    return kind(**fields)


def next_page(request: _PagedRequest, response: _PagedResponse) -> _PagedRequest | None:
    """The request for the page after `response`, or None when it was the last."""
    if not response.next_page_token:
        return None
    following = type(request)()
    following.CopyFrom(request)
    following.page_token = response.next_page_token
    return following


def activity_request(request: pb.GetActivityRequest | None, workspace_id: str | None,
                     time_zone: str | None, days: int | None) -> pb.GetActivityRequest:
    """The GetActivity request as given, or one from the keywords (not both).

    workspace_id None asks for every workspace the caller may see; time_zone and days left
    None are the contract's defaults, Asia/Jakarta and 30."""
    keywords = {"workspace_id": workspace_id, "time_zone": time_zone, "days": days}
    given: dict[str, Any] = {k: v for k, v in keywords.items() if v is not None}
    if request is not None:
        return build(pb.GetActivityRequest, request, given)
    defaults: dict[str, Any] = {"time_zone": DEFAULT_TIME_ZONE, "days": DEFAULT_DAYS}
    return pb.GetActivityRequest(**defaults | given)
