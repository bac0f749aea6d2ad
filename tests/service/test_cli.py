"""The `sarah` command line end to end against a real server: every command, --json, the
error exits, export round trips, and import from a pipe and on a terminal."""

import csv
import io
import json
import os
import pty
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result

from client import SarahClient
from client.cli import EXIT_REJECTED, cli
from client.formats import flat, to_json
from deploy import ROOT
from harness.ports import free_port
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.docs import docs_blocks
from tests.support.helpers import PHONE
from tests.support.servers import pruned_server


@pytest.fixture
def target(sqlite_server: RunningServer) -> str:
    return f"127.0.0.1:{sqlite_server.port}"


def _sarah(target: str, *args: str, stdin: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m client ...` in a child process, the server found through SARAH_TARGET."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args], cwd=ROOT, input=stdin, capture_output=True,
        text=True, timeout=60, env={**os.environ, "SARAH_TARGET": target, **(env or {})},
    )


def _invoke(target: str, *args: str) -> Result:
    """The same command line in this process, through click's runner: quicker."""
    return CliRunner().invoke(cli, [*args, "--target", target], catch_exceptions=False)


def test_upsert_then_get_in_the_contracts_json(target: str) -> None:
    upsert = _sarah(
        target, "upsert", "0812-3456-7890", "--state", "qualifying", "--score", "45",
        "--temperature", "warm", "--name", "Budi", "--team-size", "5",
        "--business-type", "restaurant", "--goals", "more bookings", "--pain-point", "no-shows",
        "--pain-point", "manual, booking", "--language", "en", "--message-count", "3",
        "--request-id", "wamid.1", "--json",
    )
    assert upsert.returncode == 0, upsert.stderr
    stored = json.loads(upsert.stdout)
    assert {k: stored[k] for k in ("contact_phone", "workspace_id", "state", "lead_score",
                                   "lead_temperature", "language", "message_count")} == {
        "contact_phone": PHONE, "workspace_id": "", "state": "qualifying", "lead_score": 45,
        "lead_temperature": "warm", "language": "en", "message_count": 3}
    assert stored["extracted_data"] == {
        "name": "Budi", "business_type": "restaurant", "team_size": 5,
        "pain_points": ["no-shows", "manual, booking"], "goals": "more bookings"}
    assert stored["created_at"].endswith("Z") and stored["etag"]
    got = _sarah(target, "get", "6281234567890", "--json")
    assert got.returncode == 0 and json.loads(got.stdout) == stored
    added = _invoke(target, "upsert", PHONE, "--add-messages", "2", "--etag", stored["etag"],
                    "--json")
    assert json.loads(added.stdout)["message_count"] == 5


def test_get_prints_a_table_of_every_field(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--name", "[bold]Budi", "--score", "45")
    result = _invoke(target, "get", "+62 812 3456 7890")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.stdout.splitlines() if line.count("│") == 3}
    assert rows["contact_phone"] == PHONE and rows["lead_score"] == "45"
    assert rows["name"] == "[bold]Budi"  # shown as written, not as rich markup
    assert rows.keys() >= {"state", "goals", "created_at", "etag"}


def test_leads_filters_and_pages(target: str) -> None:
    for i, temperature in enumerate(["hot", "warm", "hot", "hot"]):
        _invoke(target, "upsert", f"+62812000000{i:02d}", "--workspace", "w1", "--temperature",
                temperature, "--score", str(90 - i))
    _invoke(target, "upsert", PHONE, "--workspace", "w2", "--temperature", "hot")
    hot = json.loads(_invoke(target, "leads", "--workspace", "w1", "--temperature", "hot",
                             "--json").stdout)
    assert [lead["contact_phone"] for lead in hot["leads"]] == [
        "+6281200000000", "+6281200000002", "+6281200000003"]
    assert hot["next_page_token"] == ""
    page = _invoke(target, "leads", "--temperature", "hot", "--page-size", "2")
    assert "+6281200000000" in page.stdout and "+6281200000002" in page.stdout
    token = page.stdout.split("--page-token ")[1].split()[0]
    rest = _invoke(target, "leads", "--temperature", "hot", "--page-size", "2",
                   "--page-token", token)
    assert "+6281200000003" in rest.stdout and "+6281200000000" not in rest.stdout
    assert "--page-token" not in rest.stdout


def test_stats_counts_as_numbers(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--temperature", "hot", "--score", "80",
            "--state", "handoff")
    _invoke(target, "upsert", "+6281200000001", "--workspace", "w", "--score", "20")
    every = json.loads(_invoke(target, "stats", "--json").stdout)
    revision = every["revision"]  # 64-bit: a JSON string of digits
    assert every == {"total": 2, "hot": 1, "warm": 0, "cold": 1, "avg_score": 50.0,
                     "by_state": {"greeting": 1, "qualifying": 0, "scoring": 0, "handoff": 1,
                                  "completed": 0}, "revision": "2"}
    one = json.loads(_invoke(target, "stats", "--workspace", "w", "--json").stdout)
    assert (one["total"], one["avg_score"]) == (1, 20.0)
    table = _invoke(target, "stats").stdout
    assert "avg_score" in table and "50.0" in table and "state handoff" in table
    [row] = [line for line in table.splitlines() if "revision" in line]
    assert row.split("│")[-2].strip() == revision


def test_delete_erases_and_then_succeeds_again(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--score", "30")
    assert "deleted the conversation" in _invoke(target, "delete", "0812-3456-7890").stdout
    again = _invoke(target, "delete", PHONE, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == {"deleted": False}
    assert json.loads(_invoke(target, "get", PHONE, "--json").stdout)["etag"] == ""


def test_invalid_request_exits_1_naming_each_bad_field(target: str) -> None:
    result = _sarah(target, "upsert", "08123", "--score", "150", "--team-size", "-1")
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "Traceback" not in result.stderr
    for field in ("contact_phone", "lead_score", "extracted_data.team_size"):
        assert f"\n  {field}: " in result.stderr, result.stderr
    assert result.stdout == ""


def test_stale_etag_exits_1_with_aborted(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--score", "30")
    result = CliRunner().invoke(cli, ["upsert", PHONE, "--score", "40", "--etag", "stale",
                                      "--target", target])
    assert result.exit_code == 1
    assert "ABORTED" in result.stderr and "does not match" in result.stderr


def test_unreachable_server_exits_1_without_traceback() -> None:
    closed = f"127.0.0.1:{free_port()}"
    result = _sarah(closed, "stats")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr and "Traceback" not in result.stderr


def test_number_beyond_int32_is_a_usage_error(target: str) -> None:
    result = CliRunner().invoke(cli, ["upsert", PHONE, "--score", "99999999999",
                                      "--target", target])
    assert result.exit_code == 2 and "does not fit in a 32-bit integer" in result.stderr


def _seed(target: str, count: int) -> None:
    """`count` leads in workspace "w", some with text that CSV must quote, through import."""
    conversations = []
    for i in range(count):
        conversation = pb.Conversation(
            contact_phone=f"+62812{i:08d}", workspace_id="w", lead_score=i % 101,
            lead_temperature=("cold", "warm", "hot")[i % 3],
            extracted_data=pb.ExtractedData(name=f'Ibu "Sri", {i}', pain_points=["a,b", "ü"]),
            message_count=i)
        conversation.created_at.FromSeconds(1_700_000_000 + i)
        conversation.updated_at.FromSeconds(1_700_000_000 + 2 * i)
        conversations.append(conversation)
    with SarahClient(target) as sarah:
        for start in range(0, count, 500):
            sarah.import_conversations(conversations=conversations[start:start + 500])
        sarah.upsert_state(contact_phone=PHONE, workspace_id="other")


def test_export_round_trips_through_jsonl_and_csv(target: str, tmp_path: Path) -> None:
    _seed(target, 1_203)  # three pages of 500
    with SarahClient(target) as sarah:
        stored = {lead.contact_phone: lead for lead in sarah.iter_leads(workspace_id="w")}
    assert len(stored) == 1_203

    jsonl = _sarah(target, "export", "--workspace", "w")
    assert jsonl.returncode == 0 and "exported 1203 leads" in jsonl.stderr
    docs = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert {doc["contact_phone"]: doc for doc in docs} == {
        phone: to_json(lead) for phone, lead in stored.items()}

    warm_csv = tmp_path / "warm.csv"
    result = _sarah(target, "export", "--format", "csv", "--workspace", "w",
                    "--temperature", "warm", "-o", str(warm_csv))
    assert result.returncode == 0 and result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(warm_csv.read_text(encoding="utf-8"))))
    warm = {p: flat(lead) for p, lead in stored.items() if lead.lead_temperature == pb.warm}
    assert {row["contact_phone"]: row for row in rows} == warm
    assert json.loads(rows[0]["pain_points"]) == ["a,b", "ü"]

    # The JSON Lines export loads back into an empty server as the same conversations.
    other = create_server(
        Config(listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path / 'copy.db'}",
               workers=1, metrics_listen=""))
    try:
        copy_target = f"127.0.0.1:{other.port}"
        loaded = _sarah(copy_target, "import", "-", "--json", stdin=jsonl.stdout)
        assert loaded.returncode == 0
        assert json.loads(loaded.stdout)["imported"] == 1_203
        with SarahClient(copy_target) as copy:
            for lead in copy.iter_leads(workspace_id="w"):
                original = stored[lead.contact_phone]
                lead.etag = original.etag
                assert lead == original
    finally:
        other.shutdown(grace=None)


_EXPORT = "\n".join([
    json.dumps({"_id": "a", "_creationTime": 1.5, "contact_phone": "0812-3456-7890",
                "lead_score": 70, "lead_temperature": "hot",
                "created_at": 1_700_000_000_000, "updated_at": 1_700_000_360_000}),
    "{not json",
    json.dumps({"contact_phone": "6281234567890", "lead_score": 71,
                "created_at": 1_700_000_000_000, "updated_at": 1_700_000_720_000}),
    "",
    json.dumps({"contact_phone": "+6281200000001", "lead_temperature": "lukewarm",
                "created_at": 1, "updated_at": 2}),
]) + "\n"


def test_import_from_stdin_prints_a_summary_and_no_progress_bar(target: str) -> None:
    result = _sarah(target, "import", "-", stdin=_EXPORT)
    assert result.returncode == EXIT_REJECTED
    assert result.stderr == ""  # no progress bar off a terminal, no traceback
    counts = {line.split("│")[1].strip(): line.split("│")[2].strip()
              for line in result.stdout.splitlines() if line.count("│") == 3}
    assert counts == {"imported": "1", "merged": "1", "unchanged": "0", "rejected": "2"}
    assert "line 2: not valid JSON" in result.stdout
    assert "line 5: Failed to parse lead_temperature field: Invalid enum value lukewarm" in (
        result.stdout)
    lead = json.loads(_invoke(target, "get", PHONE, "--json").stdout)
    # The newer line wins field by field; its temperature is left out, so the default.
    assert (lead["lead_score"], lead["lead_temperature"]) == (71, "cold")
    assert (lead["created_at"], lead["updated_at"]) == (
        "2023-11-14T22:13:20Z", "2023-11-14T22:25:20Z")


def test_import_draws_a_progress_bar_on_a_terminal(target: str, tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text(_EXPORT)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "client", "import", str(export), "--batch-size", "1",
             "--target", target],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal, text=True,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )
        out, _ = proc.communicate(timeout=60)
        os.close(terminal)
        drawn = b""
        while chunk := _read(controller):
            drawn += chunk
    finally:
        os.close(controller)
    assert proc.returncode == EXIT_REJECTED and "line 2:" in out
    assert b"importing" in drawn


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal side is closed and drained
        return b""


def test_the_documented_import_of_the_old_backend_works_as_written(target: str,
                                                                    tmp_path: Path) -> None:
    lines = [json.dumps({"_id": str(i), "contact_phone": f"0812-0000-{i:04d}",
                         "lead_score": 90 - i, "lead_temperature": "hot" if i < 3 else "cold",
                         "created_at": 1_700_000_000_000, "updated_at": 1_700_000_000_000})
             for i in range(5)]
    (tmp_path / "export.jsonl").write_text("\n".join(lines) + "\n")
    [commands] = docs_blocks("docs/cli.md", "The command line", "sh")
    outputs = []
    for command in commands.splitlines():
        result = subprocess.run(
            command.replace(".venv/bin/sarah", f"{sys.executable} -m client"), shell=True,
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**os.environ, "SARAH_TARGET": target, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
    imported, hot, _ = outputs
    assert "imported  │ 5" in imported
    assert [f"+6281200000{i:03d}" in hot for i in range(5)] == [True] * 3 + [False] * 2
    rows = list(csv.DictReader(io.StringIO((tmp_path / "leads.csv").read_text())))
    assert len(rows) == 5 and rows[0]["contact_phone"].startswith("+62812")


def test_the_documented_library_example_runs(target: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    [example] = docs_blocks("docs/cli.md", "The Python library", "python")
    exec(example.replace("127.0.0.1:50051", target), {})  # our own docs, run as written
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["+6281244445555 hot", "ID.9081726354453628 rina_cakes 60",
                       "+6281244445555 82"]


BSUID = "ID.1648738043044942"


def test_a_bsuid_is_taken_wherever_a_phone_is(target: str) -> None:
    stored = json.loads(_invoke(target, "upsert", "--bsuid", BSUID, "--username", "tokosari",
                                "--parent-bsuid", "ID.ENT.77", "--score", "60", "--json").output)
    assert (stored["contact_phone"], stored["business_scoped_user_id"], stored["username"],
            stored["parent_business_scoped_user_id"]) == ("", BSUID, "tokosari", "ID.ENT.77")
    got = _invoke(target, "get", BSUID, "--json")
    assert json.loads(got.output) == stored
    table = _invoke(target, "leads").output
    assert BSUID in table  # named by its BSUID, having no phone
    cleared = json.loads(_invoke(target, "upsert", BSUID, "--clear", "username",
                                 "--json").output)
    assert cleared["username"] == "" and cleared["lead_score"] == 60
    assert "deleted the conversation of " + BSUID in _invoke(target, "delete", BSUID).output
    assert json.loads(_invoke(target, "get", BSUID, "--json").output)["etag"] == ""


def test_upsert_with_both_keys_and_move_identity(target: str) -> None:
    both = json.loads(_invoke(target, "upsert", "0812-3456-7890", "--bsuid", BSUID,
                              "--team-size", "5", "--json").output)
    assert (both["contact_phone"], both["business_scoped_user_id"]) == (PHONE, BSUID)
    moved = _sarah(target, "move-identity", PHONE, "0812-9999-0000", "--json")
    assert moved.returncode == 0, moved.stderr
    lead = json.loads(moved.stdout)
    assert (lead["contact_phone"], lead["business_scoped_user_id"]) == ("+6281299990000", BSUID)
    assert lead["extracted_data"]["team_size"] == 5
    renamed = json.loads(_invoke(target, "move-identity", BSUID, "ID.77", "--json").output)
    assert renamed["business_scoped_user_id"] == "ID.77"
    nobody = _sarah(target, "move-identity", "ID.404", "ID.405")
    assert nobody.returncode == 1 and nobody.stderr.startswith("Error: NOT_FOUND")


def test_bsuid_cli_errors_are_usage_errors_or_name_the_field(target: str) -> None:
    clash = CliRunner().invoke(cli, ["get", BSUID, "--bsuid", "ID.2", "--target", target])
    assert clash.exit_code == 2 and "--bsuid" in clash.output
    neither = _sarah(target, "upsert", "--score", "5")
    assert neither.returncode == 1 and "business_scoped_user_id" in neither.stderr
    bad = _sarah(target, "upsert", "--bsuid", "id.lower")
    assert bad.returncode == 1 and "\n  business_scoped_user_id: " in bad.stderr
    unknown_path = CliRunner().invoke(cli, ["upsert", BSUID, "--clear", "lead_score"])
    assert unknown_path.exit_code == 2


def test_export_writes_the_identity_columns(target: str, tmp_path: Path) -> None:
    _invoke(target, "upsert", "--bsuid", BSUID, "--username", "tokosari")
    _invoke(target, "upsert", "0812-3456-7890")
    out = tmp_path / "leads.csv"
    assert _invoke(target, "export", "--format", "csv", "-o", str(out)).exit_code == 0
    rows = {r["business_scoped_user_id"] or r["contact_phone"]: r
            for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert (rows[BSUID]["contact_phone"], rows[BSUID]["username"]) == ("", "tokosari")
    assert rows[PHONE]["business_scoped_user_id"] == ""
    lines = [json.loads(line) for line in _invoke(target, "export").output.splitlines()
             if line.startswith("{")]
    assert {line["business_scoped_user_id"] for line in lines} == {BSUID, ""}


class _Watching:
    """`sarah watch ARGS` running in a child process; `lines` is what it printed so far."""

    def __init__(self, target: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "client", "watch", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "SARAH_TARGET": target})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count: int) -> list[str]:
        # Generous: two CLI processes start (Python, grpc) on a loaded 2-core CI machine.
        wait_until(lambda: len(self.lines) >= count or self.proc.poll() is not None, 60,
                   f"{count} lines from sarah watch")
        assert len(self.lines) >= count, self.stop()
        return self.lines[:count]

    def stop(self) -> str:
        """Ctrl-C, as a person ends it; returns what it printed on stderr. The bound is only
        for "did it end at all": a watch that ignores Ctrl-C fails the test."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail("sarah watch did not end on SIGINT")
        self._reader.join(timeout=5)
        return err


_GONE = "+6281200000009"


def test_watch_prints_changes_made_by_another_client(target: str) -> None:
    with SarahClient(target) as sarah:
        sarah.upsert_state(contact_phone=PHONE, lead_score=10)  # before the watch: not shown
        sarah.upsert_state(contact_phone=_GONE, lead_score=1)
        since = sarah.get_stats().revision
        lines, as_json = _Watching(target, "--since", str(since)), _Watching(
            target, "--since", str(since), "--json")
        try:
            sarah.upsert_state(contact_phone=PHONE, lead_score=40, state=pb.qualifying,
                               lead_temperature=pb.warm)
            sarah.upsert_state(business_scoped_user_id="ID.77", workspace_id="shop")
            # A lead stored before `since`: erasing a lead also erases its earlier events.
            sarah.delete_state(contact_phone=_GONE)
            printed, docs = lines.wait_for(3), [json.loads(doc) for doc in as_json.wait_for(3)]
        finally:
            errors = lines.stop(), as_json.stop()
    assert (lines.proc.returncode, as_json.proc.returncode) == (0, 0), errors
    assert errors == ("", "")
    revisions = [int(doc["revision"]) for doc in docs]
    assert since < revisions[0] < revisions[1] < revisions[2]
    upserted, other, deleted = printed
    assert upserted.startswith(f"{revisions[0]} upserted {PHONE} workspace=- state=qualifying "
                               "temperature=warm score=40 changed=")
    assert "lead_score" in upserted.rsplit("changed=", 1)[1].split(",")
    assert other.startswith(f"{revisions[1]} upserted ID.77 workspace=shop state=greeting ")
    assert deleted == f"{revisions[2]} deleted {_GONE} workspace=-"
    # --json: the contract's LeadEvent, 64-bit revision as a string of digits.
    assert [doc["kind"] for doc in docs] == ["upserted", "upserted", "deleted"]
    assert all(isinstance(doc["revision"], str) and doc["at"] for doc in docs)
    assert docs[0]["conversation"]["lead_score"] == 40 and "lead_score" in docs[0]["changed"]
    assert docs[2]["conversation"]["contact_phone"] == _GONE


def test_watch_ends_on_ctrl_c_while_it_resumes_from_a_server_gone(tmp_path: Path) -> None:
    server = create_server(
        Config(listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path / 's.db'}",
               workers=1, metrics_listen=""))
    target = f"127.0.0.1:{server.port}"
    watching: _Watching | None = None
    try:
        with SarahClient(target) as sarah:
            since = sarah.get_stats().revision
            watching = _Watching(target, "--since", str(since))
            sarah.upsert_state(contact_phone=PHONE, lead_score=40)
        printed = watching.wait_for(1)
    finally:
        server.shutdown(grace=None)
        # The server is gone: the watch is between failed attempts to resume.
        error = watching.stop() if watching else ""
    assert (watching.proc.returncode, error) == (0, "")
    assert printed[0].startswith(f"{since + 1} upserted {PHONE} ")


def test_watch_of_a_pruned_revision_exits_1_saying_to_list_again(tmp_path: Path) -> None:
    running = pruned_server(tmp_path / "s.db")
    try:
        result = _sarah(f"127.0.0.1:{running.port}", "watch", "--since", "1")
    finally:
        running.shutdown(grace=None)
    assert result.returncode == 1
    assert "OUT_OF_RANGE: the events after revision 1 are no longer retained" in result.stderr
    assert "list the leads again" in result.stderr and "Traceback" not in result.stderr
    assert _invoke("127.0.0.1:1", "watch", "--since", "-1").exit_code == 2  # a usage error


def _history(target: str, *args: str) -> list[dict[str, Any]]:
    result = _invoke(target, "history", *args, "--json")
    assert result.exit_code == 0, result.output
    events: list[dict[str, Any]] = json.loads(result.stdout)["events"]
    return events


def test_history_lists_a_leads_changes_newest_first(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--state", "qualifying", "--score", "40",
            "--temperature", "warm")
    _invoke(target, "upsert", PHONE, "--state", "scoring", "--score", "80", "--temperature", "hot")
    _invoke(target, "upsert", PHONE, "--state", "handoff")
    events = _history(target, "0812-3456-7890")
    assert [event["kind"] for event in events] == ["upserted"] * 3
    revisions = [int(event["revision"]) for event in events]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == 3
    assert events[0]["changed"] == ["state"]
    assert set(events[1]["changed"]) == {"state", "lead_score", "lead_temperature"}
    assert [event["conversation"]["state"] for event in events] == [
        "handoff", "scoring", "qualifying"]
    assert all(event["at"].endswith("Z") for event in events)
    # The table, in the time zone of the machine running `sarah` (here WITA, +08).
    table = _sarah(target, "history", PHONE, env={"TZ": "Asia/Makassar"})
    assert table.returncode == 0, table.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in table.stdout.splitlines() if line.startswith("│")]
    assert [row[0] for row in rows] == [str(r) for r in revisions]
    assert [(row[2], row[3], row[4], row[5], row[6]) for row in rows] == [
        ("upserted", PHONE, "handoff", "hot", "80"), ("upserted", PHONE, "scoring", "hot", "80"),
        ("upserted", PHONE, "qualifying", "warm", "40")]
    assert all(row[1].endswith(" +0800") for row in rows)
    assert rows[0][7] == "state"
    assert table.stdout.rstrip().endswith("3 events")


def test_history_pages_with_the_printed_token(target: str) -> None:
    for score in range(5):
        _invoke(target, "upsert", PHONE, "--score", str(score))
    first = _invoke(target, "history", PHONE, "--page-size", "2")
    assert first.exit_code == 0, first.output
    token = first.stdout.split("--page-token ")[1].split()[0]
    rest = _history(target, PHONE, "--page-size", "2", "--page-token", token)
    assert [event["conversation"]["lead_score"] for event in rest] == [2, 1]
    everything = _history(target, PHONE, "--page-size", "500")
    assert [event["conversation"]["lead_score"] for event in everything] == [4, 3, 2, 1, 0]


def test_history_follows_an_identity_change_and_ends_with_the_erasure(target: str) -> None:
    _invoke(target, "upsert", "--bsuid", BSUID, "--score", "10")
    _invoke(target, "move-identity", BSUID, "0812-3456-7890")
    by_phone = _history(target, PHONE)
    assert [event["conversation"]["contact_phone"] for event in by_phone] == [PHONE, ""]
    assert _history(target, BSUID) == by_phone
    _invoke(target, "delete", BSUID)
    [erased] = _history(target, "--bsuid", BSUID, PHONE)
    assert erased["kind"] == "deleted"
    table = _invoke(target, "history", BSUID).stdout
    [row] = [line.split("│")[3:7] for line in table.splitlines() if line.startswith("│")]
    assert [cell.strip() for cell in row] == ["deleted", PHONE, "", ""]


def test_history_bad_requests_name_the_field(target: str) -> None:
    nobody = _sarah(target, "history", "")
    assert nobody.returncode == 1 and "INVALID_ARGUMENT" in nobody.stderr
    assert "\n  contact_phone: " in nobody.stderr and "Traceback" not in nobody.stderr
    forged = _sarah(target, "history", PHONE, "--page-token", "forged")
    assert forged.returncode == 1 and "\n  page_token: " in forged.stderr, forged.stderr
    assert forged.stdout == ""


def _today_and_yesterday(zone: str) -> set[str]:
    today = datetime.now(ZoneInfo(zone)).date()
    return {str(today), str(today - timedelta(days=1))}


def test_activity_counts_today_in_the_zone_asked(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--message-count", "3")
    _invoke(target, "upsert", "+6281200000001", "--workspace", "w", "--message-count", "2")
    _invoke(target, "upsert", "+6281200000001", "--workspace", "w", "--state", "handoff",
            "--temperature", "hot")
    _invoke(target, "upsert", PHONE, "--add-messages", "4")
    result = _invoke(target, "activity", "--time-zone", "Asia/Makassar", "--days", "2", "--json")
    assert result.exit_code == 0, result.output
    activity = json.loads(result.stdout)
    assert activity["time_zone"] == "Asia/Makassar"
    days = activity["days"]
    assert [list(day) for day in days] == [["date", "new_leads", "messages", "reached_handoff",
                                           "reached_completed", "became_hot"]] * 2
    # Two days, so that a run across midnight in Makassar still sees every write.
    assert {day["date"] for day in days} == _today_and_yesterday("Asia/Makassar")
    assert days[0]["date"] < days[1]["date"]
    totals = {key: sum(day[key] for day in days) for key in days[0] if key != "date"}
    assert totals == {"new_leads": 2, "messages": 9, "reached_handoff": 1,
                      "reached_completed": 0, "became_hot": 1}
    only_w = json.loads(_invoke(target, "activity", "--workspace", "w", "--days", "2",
                                "--json").stdout)
    assert only_w["time_zone"] == "Asia/Jakarta"
    assert sum(day["messages"] for day in only_w["days"]) == 2
    assert len(json.loads(_invoke(target, "activity", "--json").stdout)["days"]) == 30


def test_activity_chart_draws_a_bar_for_the_busiest_day(target: str) -> None:
    _invoke(target, "upsert", PHONE, "--message-count", "6")
    chart = _sarah(target, "activity", "--time-zone", "Asia/Jayapura", "--days", "3")
    assert chart.returncode == 0, chart.stderr
    assert "activity per day in Asia/Jayapura" in chart.stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in chart.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 4 and rows[-1][:3] == ["total", "", "6"]
    assert [row[3] for row in rows[:3] if row[2] == "6"] == ["█" * 30]
    assert {row[0] for row in rows[:3] if row[2] == "6"} <= _today_and_yesterday("Asia/Jayapura")


def test_activity_bad_arguments_exit_with_the_servers_message(target: str) -> None:
    for args, field in ((["--time-zone", "Mars/Olympus_Mons"], "time_zone"),
                        (["--days", "367"], "days"), (["--days", "-1"], "days")):
        result = _sarah(target, "activity", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith("Error: INVALID_ARGUMENT"), result.stderr
        assert f"\n  {field}: " in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""
    # 0 cannot be sent: proto3 reads it as "unset", which the server answers with 30 days.
    zero = CliRunner().invoke(cli, ["activity", "--days", "0", "--target", target])
    assert zero.exit_code == 2 and "--days" in zero.stderr
