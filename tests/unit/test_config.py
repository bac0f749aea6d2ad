"""Settings declared once: the parser, Config's defaults and checks, and the docs' table agree."""

import re
from pathlib import Path

import pytest

from server.config import SETTINGS, Config, cpus, parse_args
from server.settings import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_line_defaults_are_the_defaults_of_a_config_built_in_code() -> None:
    assert parse_args([], env={}) == Config()
    assert Config().worker_count == cpus() and Config().metrics_listen == "127.0.0.1:9464"


def test_each_flag_and_environment_variable_reads_its_default_as_shown() -> None:
    assert [s.name for s in SETTINGS] == list(Config.__dataclass_fields__)
    for s in SETTINGS:
        if s.switch:
            assert getattr(parse_args([s.flag], env={}), s.name) is True, s.flag
            assert getattr(parse_args([], env={s.env: "on"}), s.name) is True, s.env
        else:
            text = "" if s.default == "" else s.default_text
            assert parse_args([s.flag, text], env={}) == Config(), s.flag
            assert parse_args([], env={s.env: text}) == Config(), s.env


def test_help_names_each_flag_its_environment_variable_and_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"], env={})
    text = " ".join(capsys.readouterr().out.split())
    for s in SETTINGS:
        assert s.flag in text and f"(env {s.env}, default {s.default_text})" in text


@pytest.mark.parametrize(("fields", "says"), [
    ({"listen": "nowhere"}, "listen must be host:port, got 'nowhere'"),
    ({"listen": "127.0.0.1:65536"}, "listen must be host:port"),
    ({"metrics_listen": "127.0.0.1:metrics"}, "metrics_listen must be host:port"),
    ({"default_region": "XX"}, "default_region must name a phone region: unknown phone region"),
    ({"threads": 0}, "threads must be at least 1, got 0"),
    ({"threads": -4}, "threads must be at least 1"),
    ({"max_queued_calls": -1}, "max_queued_calls must be 0 or more, got -1"),
    ({"workers": 0}, "workers must be a number of processes from 1, or auto, got 0"),
    ({"workers": "many"}, "workers must be a number of processes from 1, or auto"),
    ({"db_pool_size": 0}, "db_pool_size must be at least 1"),
    ({"log_format": "xml"}, "log_format must be one of text, json, got 'xml'"),
    ({"health_check_seconds": 0.0}, "health_check_seconds must be above 0"),
    ({"max_watchers": -1}, "max_watchers must be 0 or more"),
    ({"watch_buffer": 0}, "watch_buffer must be at least 1"),
    ({"watch_heartbeat_seconds": 0.0}, "watch_heartbeat_seconds must be above 0"),
    ({"watch_poll_seconds": -1.0}, "watch_poll_seconds must be above 0"),
    ({"history_days": 0.0}, "history_days must be a number of days above 0"),
    ({"history_days": float("inf")}, "history_days must be a number of days above 0"),
    ({"purge_inactive_days": -30.0}, "purge_inactive_days must be a number of days above 0"),
    ({"housekeeping_seconds": float("inf")}, "housekeeping_seconds must be above 0"),
])
def test_a_config_built_in_code_is_checked_naming_the_setting(fields, says) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        Config(**fields)


def test_the_command_line_reports_the_same_checks_by_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--threads", "0"], env={})
    assert exited.value.code == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([], env={"SARAH_LOG_FORMAT": "xml"})  # argparse checks only the flag's
    assert "--log-format must be one of text, json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([], env={"SARAH_INSECURE": "maybe"})
    assert "SARAH_INSECURE: expected true or false, got 'maybe'" in capsys.readouterr().err


def test_a_config_keeps_what_its_checks_allow() -> None:
    assert Config(default_region="us").default_region == "US"
    assert Config(metrics_listen="").metrics_listen == ""
    assert Config(listen="[::1]:0", purge_inactive_days=0.5).purge_inactive_days == 0.5
    assert Config(workers=3).worker_count == 3
    assert Config(listen="127.0.0.1:0").worker_count == 1  # auto on port 0: one process


def test_the_table_has_a_row_for_every_setting() -> None:
    rows = markdown_table(SETTINGS).splitlines()
    assert rows[0] == "| flag | environment | default | what |"
    assert len(rows) == 2 + len(SETTINGS)
    for s, row in zip(SETTINGS, rows[2:], strict=True):
        assert row.startswith(f"| `{s.flag}` | `{s.env}` | ")


def _configuration_table(path: Path) -> list[str]:
    """The table lines under the page's "Configuration" heading, up to the next heading of
    its level or above."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.fullmatch(r"#+ Configuration", line.strip()))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    section = []
    for line in lines[start + 1:]:
        heading = re.match(r"(#+) ", line)
        if heading and len(heading.group(1)) <= level:
            break
        section.append(line)
    return [line for line in section if line.startswith("|")]


def test_the_docs_table_is_the_rendered_one() -> None:
    # Out of date: paste the output of `python -m tools.config_table` over it.
    operations = ROOT / "docs" / "operations.md"
    page = operations if operations.is_file() else ROOT / "README.md"
    assert _configuration_table(page) == markdown_table(SETTINGS).splitlines()
