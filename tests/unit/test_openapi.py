"""openapi.yaml, the HTTP API's description for Kapso authors, is generated from the
descriptor set Envoy loads (make openapi): it must be current and valid OpenAPI 3."""

import yaml
from openapi_spec_validator import validate

from tools.openapi import OPENAPI_YAML, generate, render


def test_the_committed_openapi_yaml_is_what_make_openapi_writes() -> None:
    assert OPENAPI_YAML.read_text() == render(generate()), (
        "openapi.yaml is stale: run `make openapi` and commit the result")


def test_the_document_is_valid_openapi() -> None:
    validate(yaml.safe_load(OPENAPI_YAML.read_text()))


def test_every_http_binding_of_the_proto_is_an_operation() -> None:
    paths = generate()["paths"]
    operations = {op["operationId"]: (path, verb)
                  for path, verbs in paths.items() for verb, op in verbs.items()}
    assert operations == {
        "GetState": ("/sarah/state", "get"), "UpsertState": ("/sarah/state", "post"),
        "DeleteState": ("/sarah/state", "delete"), "ListLeads": ("/sarah/leads", "get"),
        "GetStats": ("/sarah/stats", "get"), "ChangeIdentity": ("/sarah/identity", "post"),
        "WatchLeads": ("/sarah/watch", "get"), "ListEvents": ("/sarah/history", "get"),
        "GetActivity": ("/sarah/activity", "get")}


def test_the_json_words_are_the_contracts() -> None:
    """snake_case keys, enum words, 64-bit numbers as strings, RFC 3339 times, and the
    proto's comments as descriptions."""
    schemas = generate()["components"]["schemas"]
    conversation = schemas["Conversation"]["properties"]
    assert "contact_phone" in conversation and "contactPhone" not in conversation
    assert schemas["Temperature"]["enum"] == ["cold", "warm", "hot"]
    assert schemas["State"]["enum"] == ["greeting", "qualifying", "scoring", "handoff",
                                        "completed"]
    assert schemas["LeadEvent"]["properties"]["revision"]["type"] == "string"
    assert conversation["created_at"]["format"] == "date-time"
    assert "E.164" in conversation["contact_phone"]["description"]
    params = generate()["paths"]["/sarah/state"]["get"]["parameters"]
    assert {p["name"] for p in params} >= {"contact_phone", "workspace_id",
                                          "business_scoped_user_id"}
