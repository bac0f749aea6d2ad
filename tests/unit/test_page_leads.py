"""PageLeads: the Leads of rows read lately, by (row id, etag)."""

from server.core.domain import Lead
from server.storage.page_leads import PageLeads


def _row(i: int, etag: str) -> tuple[object, ...]:
    return (i, f"+62812{i:08d}", etag)


def _lead(row: tuple[object, ...]) -> Lead:
    return Lead(workspace_id="", contact_phone=str(row[1]), etag=str(row[2]))


def test_a_page_is_known_only_while_every_row_version_is_kept() -> None:
    kept = PageLeads(_lead, etag_at=2, most=3)
    leads = kept.keep([_row(1, "a"), _row(2, "b")])
    assert kept.known([(1, "a"), (2, "b")]) == leads
    # A row written since has a new etag: the page must be read whole again.
    assert kept.known([(1, "a"), (2, "c")]) is None
    kept.keep([_row(2, "c"), _row(3, "d")])
    # Past `most`, the oldest kept go first.
    assert kept.known([(1, "a")]) is None
    assert [lead.etag for lead in kept.known([(3, "d"), (2, "c"), (2, "b")]) or []] == [
        "d", "c", "b"]
