"""Building request messages, the same for the blocking and the asyncio client."""

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from sarah.v1 import sarah_pb2 as pb

_Request = TypeVar("_Request", bound=Message)


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


def next_page(request: pb.ListLeadsRequest, response: pb.ListLeadsResponse) -> (
        pb.ListLeadsRequest | None):
    """The request for the page after `response`, or None when it was the last."""
    if not response.next_page_token:
        return None
    following = pb.ListLeadsRequest()
    following.CopyFrom(request)
    following.page_token = response.next_page_token
    return following
