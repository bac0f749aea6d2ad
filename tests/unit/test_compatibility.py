"""The proto stays compatible with the last release: `buf breaking` as `make lint` runs it,
and the one known break since v1.0 is exactly what buf.yaml says it is."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from deploy import ROOT

BUF = str(Path(sys.executable).parent / "buf")
# The baseline is named once, in the Makefile.
RELEASED = re.search(r"^RELEASED_DESCRIPTOR := (\S+)$", (ROOT / "Makefile").read_text(),
                     re.MULTILINE)
# v1.0's GetState and UpsertState returned wrappers; they return Conversation since.
KNOWN_BREAKS = [
    ("MESSAGE_NO_DELETE", 'Previously present message "GetStateResponse" was deleted from file.'),
    ("MESSAGE_NO_DELETE",
     'Previously present message "UpsertStateResponse" was deleted from file.'),
    ("RPC_SAME_RESPONSE_TYPE", 'RPC "GetState" on service "SarahService" changed response '
                               'type from "sarah.v1.GetStateResponse" to "sarah.v1.Conversation".'),
    ("RPC_SAME_RESPONSE_TYPE", 'RPC "UpsertState" on service "SarahService" changed response '
                               'type from "sarah.v1.UpsertStateResponse" to '
                               '"sarah.v1.Conversation".'),
]


def _breaking(config: str) -> subprocess.CompletedProcess[str]:
    assert RELEASED is not None, "the Makefile names no RELEASED_DESCRIPTOR"
    return subprocess.run(
        [BUF, "breaking", "sarah/v1/sarah.pb#format=binpb", "--against",
         f"{RELEASED[1]}#format=binpb", "--config", config, "--error-format", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_buf_breaking_against_the_last_release_passes() -> None:
    done = _breaking("buf.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_known_break_is_all_that_buf_yaml_ignores() -> None:
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    del config["breaking"]["ignore_only"]
    done = _breaking(json.dumps(config))
    found = sorted((f["type"], f["message"]) for f in map(json.loads, done.stdout.splitlines()))
    assert found == sorted(KNOWN_BREAKS), done.stderr
