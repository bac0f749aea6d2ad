"""A Lead as JSON text, one spelling for what a request record left and for the change
log's conversations."""

import json
from typing import Any

from server.core.domain import Lead
from server.storage.statements import LEAD_COLUMNS


def lead_values(lead: Lead) -> dict[str, Any]:
    """The lead's fields by column name (a shallow dataclasses.asdict: its deep copy cost a
    tenth of an upsert)."""
    return {name: getattr(lead, name) for name in LEAD_COLUMNS}


def lead_to_json(lead: Lead) -> str:
    return json.dumps(lead_values(lead), ensure_ascii=False)


def lead_from_json(text: str) -> Lead:
    values = json.loads(text)
    values["pain_points"] = tuple(values["pain_points"])
    return Lead(**values)
