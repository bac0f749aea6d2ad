"""The scale table's history and activity rows: GetActivity's default 30 days in the
default zone, over every workspace and over one, and ListEvents' first page of one
seeded lead; and a check that the seeded history is what the server reads."""

from urllib.parse import quote

import grpc

from bench.history_seed import EVENTS_PER_LEAD
from bench.seed import WORKSPACES, phone, workspace
from bench.workload import Call, invoke
from sarah.v1 import sarah_pb2 as pb
from server.core.rules import MAX_ACTIVITY_DAYS

EVERY_WORKSPACE = "GetActivity, every workspace"
ONE_WORKSPACE = "GetActivity, one workspace"
LIST_EVENTS = "ListEvents page 1"
NAMES = (EVERY_WORKSPACE, ONE_WORKSPACE, LIST_EVENTS)


def _lead(count: int) -> int:
    """The lead whose history is read: one in the middle of the log, in the default
    workspace (the one GetActivity's one-workspace row reads)."""
    middle = count // 2
    return middle - middle % len(WORKSPACES)


def calls(count: int) -> dict[str, Call]:
    """Each row's request, with the request's defaults left in place (30 days,
    Asia/Jakarta; pages of 50)."""
    i = _lead(count)
    history = pb.ListEventsRequest(contact_phone=phone(i), workspace_id=workspace(i))
    return {
        EVERY_WORKSPACE: Call("GetActivity", pb.GetActivityRequest(), "GET", "/sarah/activity"),
        ONE_WORKSPACE: Call("GetActivity", pb.GetActivityRequest(workspace_id=workspace(i)),
                            "GET", f"/sarah/activity?workspace_id={quote(workspace(i))}"),
        LIST_EVENTS: Call("ListEvents", history, "GET",
                          f"/sarah/history?contact_phone={quote(phone(i), safe='')}"
                          f"&workspace_id={quote(workspace(i))}"),
    }


def check(channel: grpc.Channel, count: int) -> None:
    """Stop the bench if the server does not read the seeded history: the lead's page
    must hold its events, and a year of activity every seeded lead's creation (at least:
    the main table's writes, run before on the smallest database, add to both)."""
    page = pb.ListEventsResponse.FromString(invoke(channel, calls(count)[LIST_EVENTS]))
    if len(page.events) < EVENTS_PER_LEAD:
        raise RuntimeError(f"ListEvents gives {len(page.events)} events of a seeded lead "
                           f"where bench/history_seed.py wrote {EVENTS_PER_LEAD}")
    year = Call("GetActivity", pb.GetActivityRequest(days=MAX_ACTIVITY_DAYS), "GET", "")
    days = pb.GetActivityResponse.FromString(invoke(channel, year)).days
    created = sum(day.new_leads for day in days)
    if created < count:
        raise RuntimeError(f"GetActivity counts {created} new leads where "
                           f"bench/history_seed.py seeded {count}")
