"""The change log's events of a write, as pure functions of the leads before and after."""

import dataclasses

from server.core.changes import DELETED, UPSERTED, changed_paths, changes_of
from server.core.domain import Lead

PHONE = "+6281234567890"
LEAD = Lead(workspace_id="w", contact_phone=PHONE, etag="e1", updated_at=1)


def test_changed_lists_the_paths_that_differ_spelled_as_in_clear() -> None:
    after = dataclasses.replace(LEAD, state="handoff", lead_score=80, name="Budi",
                                username="budi", etag="e2", updated_at=2)
    assert changed_paths(LEAD, after) == (
        "state", "lead_score", "extracted_data.name", "username")


def test_bookkeeping_alone_changes_nothing_and_a_new_lead_names_what_it_sets() -> None:
    assert changed_paths(LEAD, dataclasses.replace(LEAD, etag="e2", updated_at=9)) == ()
    assert changed_paths(None, dataclasses.replace(LEAD, pain_points=("ongkir",))) == (
        "contact_phone", "extracted_data.pain_points")


def test_a_merge_gives_the_absorbed_half_deleted_first_then_the_survivor() -> None:
    half = Lead(workspace_id="w", contact_phone="", business_scoped_user_id="ID.1",
                name="Budi", etag="h")
    merged = dataclasses.replace(LEAD, business_scoped_user_id="ID.1", etag="e2")
    changes = changes_of([(half, None), (LEAD, merged), (LEAD, LEAD)])
    assert [(c.kind, c.lead.business_scoped_user_id, c.changed) for c in changes] == [
        (DELETED, "ID.1", ()), (UPSERTED, "ID.1", ("business_scoped_user_id",))]
    assert changes[0].lead.name is None and changes[0].lead.etag == ""  # keys only
