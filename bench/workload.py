"""The requests the bench sends: each RPC as a framed gRPC body and as HTTP/JSON."""

import http.client
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from bench.h2load import GRPC_HEADERS, Load, grpc_frame, split
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

RPCS = ("GetState", "UpsertState", "ListLeads", "GetStats", "DeleteState")
SERVICE = "sarah.v1.SarahService"


@dataclass(frozen=True)
class Call:
    """One RPC with fixed arguments, and the same call as Kapso or the dashboard makes it."""

    rpc: str
    request: Message
    http_method: str
    http_path: str
    http_body: dict | None = None


def kapso_upsert(phone: str) -> dict:
    """The contract's UpsertState body, the one Kapso sends today."""
    return {"contact_phone": phone, "state": "qualifying", "lead_score": 45,
            "lead_temperature": "warm",
            "extracted_data": {"name": "Budi", "business_type": "restaurant", "team_size": 5},
            "language": "id", "message_count": 3}


def calls(known_phone: str, unknown_phone: str) -> dict[str, Call]:
    """Each RPC: read and write one stored lead, the first page and stats of every lead,
    and erase a lead that is not there (the write path without a row to delete)."""
    known, unknown = quote(known_phone, safe=""), quote(unknown_phone, safe="")
    upsert = kapso_upsert(known_phone)
    return {
        "GetState": Call("GetState", pb.GetStateRequest(contact_phone=known_phone),
                         "GET", f"/sarah/state?contact_phone={known}"),
        "UpsertState": Call("UpsertState", json_format.ParseDict(upsert, pb.UpsertStateRequest()),
                            "POST", "/sarah/state", upsert),
        "ListLeads": list_page(""),
        "GetStats": Call("GetStats", pb.GetStatsRequest(), "GET", "/sarah/stats"),
        "DeleteState": Call("DeleteState", pb.DeleteStateRequest(contact_phone=unknown_phone),
                            "DELETE", f"/sarah/state?contact_phone={unknown}"),
    }


def list_page(token: str) -> Call:
    """ListLeads with the default filters, order and page size, at `token`."""
    path = "/sarah/leads" + (f"?page_token={quote(token, safe='')}" if token else "")
    return Call("ListLeads", pb.ListLeadsRequest(page_token=token), "GET", path)


def invoke(channel: grpc.Channel, call: Call) -> bytes:
    """Make the call once over gRPC and return the serialized response (errors raise)."""
    method = channel.unary_unary(f"/{SERVICE}/{call.rpc}")  # bytes in, bytes out
    return method(call.request.SerializeToString(), timeout=60)


def page_token(channel: grpc.Channel, page: int, page_size: int) -> str:
    """The token of ListLeads page `page` of `page_size` leads (page 1 has none).

    A token is tied to the filters and order, not to the page size, so the walk takes
    pages of up to 500 leads and counts what each returned: a tenth of the calls.
    """
    token, skip = "", (page - 1) * page_size
    while skip > 0:
        request = pb.ListLeadsRequest(page_token=token, page_size=min(500, skip))
        reply = pb.ListLeadsResponse.FromString(
            invoke(channel, Call("ListLeads", request, "GET", "")))
        token, skip = reply.next_page_token, skip - len(reply.leads)
        if not token and skip > 0:
            raise RuntimeError(f"the database has fewer than {page} pages")
    return token


def check_http(port: int, call: Call) -> None:
    """One HTTP/JSON call through Envoy; anything but 200 stops the bench."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = None if call.http_body is None else json.dumps(call.http_body)
    conn.request(call.http_method, call.http_path, body=body,
                 headers={"content-type": "application/json"})
    reply = conn.getresponse()
    text = reply.read()
    conn.close()
    if reply.status != 200:
        raise RuntimeError(f"{call.http_method} {call.http_path}: {reply.status} {text[:300]!r}")


def grpc_load(call: Call, port: int, workdir: Path, label: str, **shape) -> Load:
    body = workdir / f"{label}.bin"
    body.write_bytes(grpc_frame(call.request.SerializeToString()))
    return Load(url=f"http://127.0.0.1:{port}/{SERVICE}/{call.rpc}", body=body,
                headers=GRPC_HEADERS, **shape)


def grpc_loads(call: Call, ports: list[int], workdir: Path, label: str, **shape) -> list[Load]:
    """The gRPC load shared out over a server's worker processes, one port each."""
    load = grpc_load(call, ports[0], workdir, label, **shape)
    return split(load, [f"http://127.0.0.1:{port}/{SERVICE}/{call.rpc}" for port in ports])


def http_load(call: Call, port: int, workdir: Path, label: str, **shape) -> Load:
    """HTTP/1.1, as Kapso's Function nodes call; h2load can send a DELETE by :method."""
    body, headers = None, ()
    if call.http_body is not None:
        body = workdir / f"{label}.json"
        body.write_text(json.dumps(call.http_body))
        headers = ("content-type: application/json",)
    elif call.http_method != "GET":
        headers = (f":method: {call.http_method}",)
    return Load(url=f"http://127.0.0.1:{port}{call.http_path}", body=body, headers=headers,
                h1=True, **shape)
