"""A Lead as a conversation row and back: the columns a query selects, the values a write
sends, and the (workspace, phone, BSUID) key a transaction finds a row by."""

import json
from collections.abc import Iterator
from typing import Any, cast

import peewee

from server.core.domain import Lead
from server.storage.lead_json import encode_json, lead_values
from server.storage.models import ConversationRow
from server.storage.statements import LEAD_COLUMNS

RowKey = tuple[str, str, str]  # (workspace_id, contact_phone, business_scoped_user_id)
_PAIN_POINTS = LEAD_COLUMNS.index("pain_points")


def lead_from_tuple(row: tuple[Any, ...]) -> Lead:
    """A Lead from a row of (id, *LEAD_COLUMNS)."""
    values = list(row[1:])
    values[_PAIN_POINTS] = tuple(json.loads(values[_PAIN_POINTS]))
    return Lead(*values)


def row_values(lead: Lead) -> dict[str, Any]:
    values = lead_values(lead)
    values["pain_points"] = encode_json(list(lead.pain_points))
    return values


def tuples(query: "peewee.ModelSelect[Any]") -> Iterator[tuple[Any, ...]]:
    """The rows of `query` as plain tuples: a model object per row cost more than the
    query. (peewee's types do not follow .tuples(), which changes what rows are.)"""
    rows: Iterator[tuple[Any, ...]] = iter(cast(Any, query.tuples()))
    return rows


def lead_columns() -> list[peewee.Field]:
    return [ConversationRow.id, *(getattr(ConversationRow, c) for c in LEAD_COLUMNS)]


def row_key(lead: Lead) -> RowKey:
    return lead.workspace_id, lead.contact_phone, lead.business_scoped_user_id
