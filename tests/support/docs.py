"""The documentation's examples, for the tests that run them as written: a page's section
found by its heading, and that section's code blocks. Every test that reads the README or
a page of docs/ reads it through here, so a heading renamed or an example moved fails
with the page and the heading named. The shell examples run as written: a block's command
lines, and a documented curl line against an Envoy on any port."""

import re
import shlex
import subprocess

from deploy import ROOT

_HEADING = re.compile(r"(#{1,6}) (.+?)\s*$")
_FENCE = "```"


def _lines(file: str) -> list[str]:
    return (ROOT / file).read_text().splitlines()


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every heading outside code blocks (a `# comment` in
    a shell block is no heading)."""
    found, fenced = [], False
    for index, line in enumerate(lines):
        if line.lstrip().startswith(_FENCE):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            found.append((index, len(heading.group(1)), heading.group(2)))
    return found


def docs_section(file: str, heading: str) -> str:
    """The text under `heading` (its title, without the #s) in `file` (a path from the
    repository root, e.g. "docs/operations.md"), up to the next heading of the same level
    or higher: its subsections are part of it."""
    lines = _lines(file)
    headings = _headings(lines)
    matches = [(i, level) for i, level, title in headings if title == heading]
    if len(matches) != 1:
        titles = "\n".join(f"{'#' * level} {title}" for _, level, title in headings)
        raise LookupError(f"{file} has {len(matches)} headings {heading!r}, not one; "
                          f"its headings:\n{titles}")
    start, level = matches[0]
    end = next((i for i, other, _ in headings if i > start and other <= level), len(lines))
    return "\n".join(lines[start + 1:end]) + "\n"


def docs_blocks(file: str, heading: str, language: str) -> list[str]:
    """The ```language code blocks of that section, in order, each without its fences."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in docs_section(file, heading).splitlines():
        if current is None:
            if line.strip() == _FENCE + language:
                current = []
        elif line.strip() == _FENCE:
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line)
    if not blocks:
        raise LookupError(f"{file}, {heading!r}: no ```{language} block")
    return blocks


def shell_lines(block: str) -> list[str]:
    """A ```sh block's commands, continuation lines joined, comment lines left out."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def curl_example(command: str, port: int) -> str:
    """A documented curl line against an Envoy on `port` (the docs say 8080): its status is
    200, or the one its `# NNN` comment names, and its body JSON. The body."""
    argv = shlex.split(command.replace("127.0.0.1:8080", f"127.0.0.1:{port}"), comments=True)
    done = subprocess.run([*argv, "--silent", "--show-error", "--write-out", "\n%{http_code}"],
                          capture_output=True, text=True, timeout=30)
    body, _, status = done.stdout.rpartition("\n")
    expected = re.search(r"# (\d{3})", command)
    assert done.returncode == 0, (command, done.stderr)
    assert status == (expected.group(1) if expected else "200"), (command, body)
    assert body.lstrip().startswith("{"), (command, body)
    return body
