"""The call log: every failed call, successful ones up to a budget a second, the rest
counted in one line."""

import logging

import pytest

from server.api.calllog import CallLog

METHOD = "/sarah.v1.SarahService/GetState"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines:
    """The call log's records so far (pytest's list is replaced between a test's phases)."""

    def __init__(self, caplog: pytest.LogCaptureFixture):
        self._caplog = caplog

    def __getitem__(self, index):
        return self._caplog.records[index]

    def __iter__(self):
        return iter(self._caplog.records)

    def __len__(self) -> int:
        return len(self._caplog.records)


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    caplog.set_level(logging.INFO, logger="server.calls")
    return Lines(caplog)


def test_successful_calls_beyond_the_budget_are_counted_not_logged(lines) -> None:
    clock = Clock()
    log = CallLog(ok_lines_per_second=3, clock=clock)
    for i in range(5):
        log.record(METHOD, "OK", 0.002, f"req-{i}")
    assert [r.request_id for r in lines] == ["req-0", "req-1", "req-2"]
    clock.now += 1.0
    log.record(METHOD, "OK", 0.001, "req-next")
    summary, line = lines[3], lines[4]
    assert (summary.unlogged, summary.mean_duration_ms, summary.code) == (2, 2.0, "OK")
    assert f"calls method={METHOD} code=OK unlogged=2" in summary.getMessage()
    assert line.request_id == "req-next"


def test_failed_calls_are_always_logged_with_their_request_id(lines) -> None:
    log = CallLog(ok_lines_per_second=0, clock=Clock())
    log.record(METHOD, "OK", 0.001, "fine")
    for i in range(20):
        log.record(METHOD, "INVALID_ARGUMENT", 0.001, f"bad-{i}")
    assert [r.request_id for r in lines] == [f"bad-{i}" for i in range(20)]
    assert all(r.code == "INVALID_ARGUMENT" for r in lines)
    assert f"method={METHOD} code=INVALID_ARGUMENT" in lines[0].getMessage()


def test_each_method_has_its_own_budget_and_flush_reports_the_rest(lines) -> None:
    log = CallLog(ok_lines_per_second=1, clock=Clock())
    for method in (METHOD, "/sarah.v1.SarahService/GetStats"):
        log.record(method, "OK", 0.001, "first")
        log.record(method, "OK", 0.003, "second")
    assert [(r.method, r.request_id) for r in lines] == [
        (METHOD, "first"), ("/sarah.v1.SarahService/GetStats", "first")]
    log.flush()
    assert sorted((r.method, r.unlogged) for r in lines[2:]) == [
        (METHOD, 1), ("/sarah.v1.SarahService/GetStats", 1)]
    log.flush()
    assert len(lines) == 4  # nothing is reported twice


def test_refusals_for_capacity_share_a_budget_other_failures_do_not(lines) -> None:
    log = CallLog(ok_lines_per_second=2, clock=Clock())
    for i in range(5):
        log.record(METHOD, "UNAVAILABLE", 0.0001, f"shed-{i}", routine=True)
    log.record(METHOD, "UNAVAILABLE", 0.004, "database-busy")  # a real failure: logged
    assert [r.request_id for r in lines] == ["shed-0", "shed-1", "database-busy"]
    log.flush()
    (summary,) = lines[3:]
    assert (summary.code, summary.unlogged) == ("UNAVAILABLE", 3)
    assert f"calls method={METHOD} code=UNAVAILABLE unlogged=3" in summary.getMessage()
