"""A setting declared once: its flag, environment variable, default, reader, check and help."""

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, TypeVar

_T = TypeVar("_T")
_KEY = "setting"


@dataclass(frozen=True)
class Setting:
    """One field of Config. Its flag and environment variable are named after the field;
    `parse` reads their text, `check` refuses a value (ValueError saying what it must be)
    or returns it as kept, wherever the Config is built."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    check: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] = ()
    switch: bool = False  # a flag without a value (store_true)
    shown: str = ""  # the default as the help and the docs print it, when str() would not do
    see: str = ""  # the docs section that says more

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SARAH_" + self.name.upper()

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if self.default == "":
            return "none"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def setting(default: _T, help: str, *, parse: Callable[[str], Any] = str,
            check: Callable[[Any], Any] | None = None, choices: tuple[str, ...] = (),
            switch: bool = False, shown: str = "", see: str = "") -> _T:
    """A dataclass field declared as a setting (typed as its default, as `field` is)."""
    declared = Setting("", default, help, parse, check, choices, switch, shown, see)
    return field(default=default, metadata={_KEY: declared})


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings a dataclass declares with `setting`, in field order."""
    found: tuple[Field[Any], ...] = fields(cls)
    return tuple(replace(f.metadata[_KEY], name=f.name) for f in found if _KEY in f.metadata)


class ConfigError(ValueError):
    """A value a setting refuses; says so by the field's name (the parser, by the flag)."""

    def __init__(self, setting: Setting, problem: str):
        super().__init__(f"{setting.name} {problem}")
        self.setting = setting
        self.problem = problem


def checked(setting: Setting, value: object) -> object:
    """`value` as `setting` keeps it, or ConfigError."""
    try:
        if setting.choices and value not in setting.choices:
            raise ValueError(f"must be one of {', '.join(setting.choices)}, got {value!r}")
        return value if setting.check is None else setting.check(value)
    except ValueError as exc:
        raise ConfigError(setting, str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting],
                  env: dict[str, str]) -> None:
    """A flag per setting, whose default its environment variable replaces; each help ends
    by naming both."""
    for s in settings:
        help = f"{s.help} (env {s.env}, default {s.default_text})".replace("%", "%%")
        if s.switch:
            parser.add_argument(s.flag, action="store_true", help=help,
                                default=_switch_from(parser, s, env))
        else:
            # A string default (the environment's) is read by `parse` as a flag's would be.
            parser.add_argument(s.flag, type=s.parse, choices=s.choices or None, help=help,
                                default=env.get(s.env, s.default))


def _switch_from(parser: argparse.ArgumentParser, s: Setting, env: dict[str, str]) -> Any:
    if s.env not in env:
        return s.default
    try:
        return s.parse(env[s.env])
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(f"{s.env}: {exc}")


def markdown_table(settings: Sequence[Setting]) -> str:
    """The settings as the docs' Markdown table: flag, environment, default, what."""
    rows = ["| flag | environment | default | what |", "| --- | --- | --- | --- |"]
    for s in settings:
        default = "none" if s.default_text == "none" else f"`{s.default_text}`"
        what = s.help + (f" (see {s.see})" if s.see else "")
        cells = (f"`{s.flag}`", f"`{s.env}`", default, what.replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# Readers of a flag's text (argparse reports their errors naming the flag).

def on_off(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_DAYS_ABOVE_0 = "must be a number of days above 0"


def days(text: str) -> float:
    """A number of days above 0 (fractions allowed: tests use seconds' worth)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    try:
        return positive_days(number)
    except ValueError:  # said with the text as written
        raise argparse.ArgumentTypeError(f"{_DAYS_ABOVE_0}, got {text!r}") from None


def days_or_off(text: str) -> float | None:
    return None if text.strip().lower() in ("", "off") else days(text)


# Checks of a value, however it came (Config.__post_init__ runs them).

def at_least(least: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < least:
            raise ValueError(f"must be {'0 or more' if least == 0 else f'at least {least}'}, "
                             f"got {value!r}")
        return value
    return check


def above_zero(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be above 0, got {value!r}")
    return value


def finite_above_zero(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be above 0, got {value!r}")
    return value


def positive_days(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{_DAYS_ABOVE_0}, got {value!r}")
    return value


def positive_days_or_off(value: float | None) -> float | None:
    return None if value is None else positive_days(value)


def host_port(value: str) -> str:
    """host:port, the port a number (0 picks a free one); the host is checked on binding."""
    _host, colon, port = value.rpartition(":")
    if not (colon and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"must be host:port, got {value!r}")
    return value


def host_port_or_off(value: str) -> str:
    return value if value == "" else host_port(value)
