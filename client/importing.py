"""Loading the earlier backend's export (JSON Lines of sarahConversations) in batches.

Each line is one conversation with the contract's fields and its timestamps in
milliseconds since the epoch. Keys starting with "_" (`_id`, `_creationTime`) are the old
database's own and are ignored. RFC 3339 timestamps are read too, so a file written by
`sarah export --format jsonl` loads back the same way.
"""

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from client.sync import SarahClient
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

MAX_BATCH = 500  # the server's limit per ImportConversations call
# A batch also ends before its conversations pass 3 MiB: gRPC refuses a message over 4 MiB
# by default, and 500 leads with their 4,096-character slots filled would be ~47 MiB.
MAX_BATCH_BYTES = 3 * 1024 * 1024
_TIMESTAMPS = ("created_at", "updated_at", "last_message_at")


@dataclass
class ImportSummary:
    """What an import did, line by line: counts per outcome, and each rejected line."""

    imported: int = 0
    merged: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "imported": self.imported, "merged": self.merged, "unchanged": self.unchanged,
            "rejected": [{"line": n, "reason": why} for n, why in sorted(self.rejected)],
        }


def _set_timestamp(conversation: pb.Conversation, key: str, value: Any) -> None:
    stamp = getattr(conversation, key)
    if isinstance(value, int) and not isinstance(value, bool):
        stamp.FromMilliseconds(value)
    elif isinstance(value, str):
        try:
            stamp.FromJsonString(value)
        except ValueError as exc:
            raise ValueError(f"{key}: not an RFC 3339 timestamp: {value!r}") from exc
    elif value is not None:
        raise ValueError(f"{key}: must be milliseconds since the epoch, got {value!r}")


def parse_line(raw: bytes) -> pb.Conversation:
    """One line of the export as a Conversation; ValueError tells why it is not one."""
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    own = {key: value for key, value in doc.items() if not key.startswith("_")}
    stamps = {key: own.pop(key, None) for key in _TIMESTAMPS}
    conversation = pb.Conversation()
    try:
        json_format.ParseDict(own, conversation)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from exc
    for key, value in stamps.items():
        _set_timestamp(conversation, key, value)
    return conversation


def _send(client: SarahClient, batch: list[tuple[int, pb.Conversation]],
          summary: ImportSummary) -> None:
    request = pb.ImportConversationsRequest(conversations=[c for _, c in batch])
    response = client.import_conversations(request)
    for (line, _), result in zip(batch, response.results, strict=True):
        outcome = pb.ImportOutcome.Name(result.outcome)
        if outcome == "rejected":
            summary.rejected.append((line, result.reason))
        else:
            summary.count(outcome)


def import_lines(
    client: SarahClient,
    lines: Iterable[bytes],
    summary: ImportSummary,
    batch_size: int = MAX_BATCH,
    progress: Callable[[int], None] = lambda done: None,
) -> None:
    """Import the export's lines into `summary`, `batch_size` conversations per call.

    Reads as it sends, so memory stays constant whatever the file's size. Blank lines are
    skipped. `progress` is told the bytes read after each batch. A failed call raises
    grpc.RpcError with `summary` holding what the batches before it did; running the
    import again is safe, as the server skips what it already holds.
    """
    batch: list[tuple[int, pb.Conversation]] = []
    batch_bytes = 0
    read = 0
    for number, raw in enumerate(lines, start=1):
        read += len(raw)
        if raw.strip():
            try:
                conversation = parse_line(raw)
            except ValueError as exc:
                summary.rejected.append((number, str(exc)))
            else:
                size = conversation.ByteSize()
                if batch and batch_bytes + size > MAX_BATCH_BYTES:
                    _send(client, batch, summary)
                    batch, batch_bytes = [], 0
                    progress(read - len(raw))
                batch.append((number, conversation))
                batch_bytes += size
        if len(batch) >= batch_size:
            _send(client, batch, summary)
            batch, batch_bytes = [], 0
            progress(read)
    if batch:
        _send(client, batch, summary)
    progress(read)
