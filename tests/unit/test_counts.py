"""Lead counts as plain values: what a write changes, and the stats they add up to."""

from server.core.counts import CountChange, CountDeltas, CountRow, stats_of
from server.core.domain import Lead

PHONE = "+6281234567890"


def _lead(workspace_id: str = "", lead_score: int = 0, lead_temperature: str = "cold",
          state: str = "greeting") -> Lead:
    return Lead(workspace_id=workspace_id, contact_phone=PHONE, lead_score=lead_score,
                lead_temperature=lead_temperature, state=state)


def test_a_create_counts_one_lead_and_its_score() -> None:
    deltas = CountDeltas()
    deltas.change(None, _lead(lead_score=40, lead_temperature="warm"))
    assert list(deltas.changes()) == [CountChange("", "warm", "greeting", 1, 40)]


def test_a_move_between_buckets_takes_from_one_and_adds_to_the_other() -> None:
    deltas = CountDeltas()
    deltas.change(_lead(lead_score=40, lead_temperature="warm"),
                  _lead(lead_score=80, lead_temperature="hot", state="handoff"))
    assert list(deltas.changes()) == [CountChange("", "hot", "handoff", 1, 80),
                                      CountChange("", "warm", "greeting", -1, -40)]


def test_a_score_change_within_a_bucket_moves_only_the_score() -> None:
    deltas = CountDeltas()
    deltas.change(_lead(lead_score=10), _lead(lead_score=15))
    assert list(deltas.changes()) == [CountChange("", "cold", "greeting", 0, 5)]


def test_changes_that_cancel_out_touch_no_bucket() -> None:
    deltas = CountDeltas()
    deltas.change(None, _lead(lead_score=10))
    deltas.change(_lead(lead_score=10), None)  # a delete in the same transaction
    deltas.change(_lead(), _lead())  # an update that keeps bucket and score
    assert list(deltas.changes()) == []


def test_changes_come_sorted_so_writers_lock_buckets_in_one_order() -> None:
    deltas = CountDeltas()
    for workspace in ("toko", "", "abc"):
        deltas.change(None, _lead(workspace_id=workspace))
    assert [c.workspace_id for c in deltas.changes()] == ["", "abc", "toko"]


def test_stats_sum_rows_across_workspaces() -> None:
    stats = stats_of([CountRow("hot", "handoff", 2, 170), CountRow("cold", "greeting", 1, 10),
                      CountRow("hot", "greeting", 1, 80)])
    assert stats.total == 4
    assert stats.by_temperature == {"hot": 3, "cold": 1}
    assert stats.by_state == {"handoff": 2, "greeting": 2}
    assert stats.avg_score == 65.0


def test_stats_of_nothing_is_zero_without_dividing_by_it() -> None:
    assert stats_of([]).total == 0 and stats_of([]).avg_score == 0.0
