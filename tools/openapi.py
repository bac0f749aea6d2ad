"""make openapi: write openapi.yaml, the OpenAPI 3 description of the HTTP/JSON API, from
the descriptor set Envoy's transcoder loads (sarah/v1/sarah.pb).

grpc-gateway's protoc-gen-openapiv2 is Go and not installable here, so this is a small
generator over the same facts the transcoder uses: each method's google.api.http rule,
its request and response messages, and the proto's comments as descriptions. It follows
the transcoder's JSON rules as envoy.yaml configures them: snake_case keys
(preserve_proto_field_names), enum words (not numbers), 64-bit integers as strings,
Timestamps as RFC 3339, primitive fields always printed, errors as google.rpc.Status.

Usage: python -m tools.openapi [OUT]   (default: openapi.yaml at the repository root)
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2  # registers the http option, so it parses
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR_SET = ROOT / "sarah" / "v1" / "sarah.pb"
OPENAPI_YAML = ROOT / "openapi.yaml"
SERVICE = "sarah.v1.SarahService"  # the one service the transcoder exposes (envoy.yaml)
PACKAGE = "sarah.v1."

FDP = descriptor_pb2.FieldDescriptorProto
Schema = dict[str, Any]

_INT32 = {FDP.TYPE_INT32, FDP.TYPE_SINT32, FDP.TYPE_SFIXED32, FDP.TYPE_UINT32,
          FDP.TYPE_FIXED32}
_INT64 = {FDP.TYPE_INT64, FDP.TYPE_SINT64, FDP.TYPE_SFIXED64, FDP.TYPE_UINT64,
          FDP.TYPE_FIXED64}
# Well-known types print as JSON scalars (protobuf's JSON mapping).
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339, UTC."},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}},
                            "additionalProperties": True},
}

# The contract's limits on values ("Limits on text"), which the proto cannot state; the
# server enforces them (INVALID_ARGUMENT naming the field). Keyed by field name, for
# requests and responses alike.
_LIMITS: dict[str, Schema] = {
    "workspace_id": {"maxLength": 64, "pattern": "^[A-Za-z0-9_-]*$"},
    "name": {"maxLength": 4096},
    "business_type": {"maxLength": 4096},
    "goals": {"maxLength": 4096},
    "lead_score": {"minimum": 0, "maximum": 100},
    "team_size": {"minimum": 0, "maximum": 1_000_000},
    "message_count": {"minimum": 0, "maximum": 1_000_000},
    "add_messages": {"minimum": 0, "maximum": 1000},
    "request_id": {"maxLength": 128},
    "username": {"maxLength": 64},
    "parent_business_scoped_user_id": {
        "maxLength": 135, "pattern": r"^([A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128})?$"},
    "pain_points": {"maxLength": 4096},  # each of them
}
_MAX_ITEMS = {"pain_points": 20, "clear": 10}
_EXAMPLES = {"contact_phone": "+6281234567890", "new_contact_phone": "+6281234567891"}

# The errors a JSON call can get, and the case of each (docs/api.md's "Errors" table).
_ERRORS = {
    "400": "A field is invalid (the message and google.rpc.BadRequest details name it), "
           "or the JSON is malformed.",
    "401": "The API key is missing or wrong.",
    "403": "The API key is valid, but for another workspace.",
    "404": "No such path, or no such lead where one is required.",
    "409": "The etag does not match the stored one; nothing was written.",
    "413": "The body is over the size limit.",
    "415": "The body is not JSON (Content-Type must be application/json).",
    "429": "Too many requests for this API key; retry after the Retry-After header.",
    "503": "The server is down or draining; retry.",
}


class _Comments:
    """The leading comments of a file's elements, by their source-info path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto):
        self._by_path = {tuple(loc.path): loc.leading_comments
                         for loc in file.source_code_info.location}

    def of(self, *path: int) -> str:
        # Comments are `// text` lines wrapped at 92 columns: rejoin each paragraph.
        lines = [line.strip() for line in self._by_path.get(path, "").split("\n")]
        paragraphs = " ".join(line or "\n\n" for line in lines).split("\n\n")
        return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


class _Catalogue:
    """Every message and enum of the descriptor set, by full name, with its comments."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet):
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, _Comments,
                                       tuple[int, ...]]] = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, _Comments,
                                    tuple[int, ...]]] = {}
        self.files = list(files.file)
        for file in files.file:
            comments = _Comments(file)
            prefix = f".{file.package}." if file.package else "."
            for i, message in enumerate(file.message_type):
                self._add_message(prefix + message.name, message, comments, (4, i))
            for i, enum in enumerate(file.enum_type):
                self.enums[prefix + enum.name] = (enum, comments, (5, i))

    def _add_message(self, name: str, message: descriptor_pb2.DescriptorProto,
                     comments: _Comments, path: tuple[int, ...]) -> None:
        self.messages[name] = (message, comments, path)
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, comments, (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, comments, (*path, 4, i))


def _component_name(full_name: str) -> str:
    name = full_name.lstrip(".")
    return name[len(PACKAGE):] if name.startswith(PACKAGE) else name


def _ref(full_name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{_component_name(full_name)}"}


class _Generator:
    def __init__(self, catalogue: _Catalogue, response_only: set[str]):
        self._catalogue = catalogue
        # Messages only responses carry: their always-printed fields are `required`.
        self.response_only = response_only
        self.schemas: dict[str, Schema] = {}

    def field_schema(self, field: FDP) -> Schema:
        """The JSON schema of one value of `field` (an element, if repeated), with the
        contract's limits on it."""
        schema = self._type_schema(field)
        if "$ref" not in schema:
            schema.update(_LIMITS.get(field.name, {}))
            if field.name in _EXAMPLES:
                schema["example"] = _EXAMPLES[field.name]
        return schema

    def _type_schema(self, field: FDP) -> Schema:
        if field.type == FDP.TYPE_STRING:
            return {"type": "string"}
        if field.type == FDP.TYPE_BOOL:
            return {"type": "boolean"}
        if field.type in _INT32:
            return {"type": "integer", "format": "int32"}
        if field.type in _INT64:
            # protobuf's JSON mapping: 64-bit integers are strings of digits.
            return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
        if field.type in (FDP.TYPE_DOUBLE, FDP.TYPE_FLOAT):
            return {"type": "number"}
        if field.type == FDP.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        if field.type == FDP.TYPE_ENUM:
            self.enum(field.type_name)
            return _ref(field.type_name)
        well_known = _WELL_KNOWN.get(field.type_name.lstrip("."))
        if well_known is not None:
            return dict(well_known)
        self.message(field.type_name)
        return _ref(field.type_name)

    def enum(self, full_name: str) -> None:
        name = _component_name(full_name)
        if name in self.schemas:
            return
        enum, comments, path = self._catalogue.enums[full_name]
        words = [value.name for value in enum.value]
        lines = [comments.of(*path)] + [
            f"- `{value.name}`: {comments.of(*path, 2, i)}"
            for i, value in enumerate(enum.value)]
        self.schemas[name] = {"type": "string", "enum": words,
                              "description": "\n".join(line for line in lines if line)}

    def message(self, full_name: str) -> None:
        name = _component_name(full_name)
        if name in self.schemas:
            return
        message, comments, path = self._catalogue.messages[full_name]
        schema: Schema = {"type": "object", "description": comments.of(*path),
                          "properties": {}}
        self.schemas[name] = schema  # before the fields: a message may refer to itself
        required = []
        for i, field in enumerate(message.field):
            entry = self._map_entry(field)
            if entry is not None:
                value: Schema = {"type": "object",
                                 "additionalProperties": self.field_schema(entry.field[1])}
            elif field.label == FDP.LABEL_REPEATED:
                value = {"type": "array", "items": self.field_schema(field)}
                if field.name in _MAX_ITEMS:
                    value["maxItems"] = _MAX_ITEMS[field.name]
            else:
                value = self.field_schema(field)
            description = comments.of(*path, 2, i)
            if description:
                # A $ref takes no siblings in OpenAPI 3.0: wrap it to carry a description.
                value = ({"allOf": [value], "description": description}
                         if "$ref" in value else {**value, "description": description})
            schema["properties"][field.name] = value
            if _always_printed(field):
                required.append(field.name)
        if required and full_name in self.response_only:
            schema["required"] = required

    def _map_entry(self, field: FDP) -> descriptor_pb2.DescriptorProto | None:
        if field.type != FDP.TYPE_MESSAGE or field.label != FDP.LABEL_REPEATED:
            return None
        found = self._catalogue.messages.get(field.type_name)
        return found[0] if found and found[0].options.map_entry else None


def _always_printed(field: FDP) -> bool:
    """Whether the transcoder prints the field even at its default
    (always_print_primitive_fields): scalars, enums and lists without presence."""
    if field.proto3_optional:
        return False
    return field.label == FDP.LABEL_REPEATED or field.type != FDP.TYPE_MESSAGE


def _query_parameters(gen: _Generator, catalogue: _Catalogue,
                      request: str) -> list[Schema]:
    """A GET or DELETE takes every request field as a query parameter (the transcoder
    also accepts lowerCamelCase names; snake_case is documented)."""
    message, comments, path = catalogue.messages[request]
    parameters = []
    for i, field in enumerate(message.field):
        schema = gen.field_schema(field)
        if field.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": schema}
        parameters.append({"name": field.name, "in": "query", "required": False,
                           "description": comments.of(*path, 2, i), "schema": schema})
    return parameters


def _error_response(description: str) -> Schema:
    return {"description": description, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _reachable(catalogue: _Catalogue, roots: list[str]) -> set[str]:
    """The messages `roots` contain, directly or deeper."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in catalogue.messages:
            continue
        seen.add(name)
        todo.extend(f.type_name for f in catalogue.messages[name][0].field
                    if f.type == FDP.TYPE_MESSAGE)
    return seen


def _operation(gen: _Generator, catalogue: _Catalogue, method: descriptor_pb2.MethodDescriptorProto,
               description: str, verb: str, rule: Any) -> Schema:
    operation: Schema = {
        "operationId": method.name,
        "summary": description.split(". ")[0].split("\n")[0].rstrip("."),
        "description": description,
        "tags": ["SarahService"],
    }
    if verb in ("get", "delete"):
        operation["parameters"] = _query_parameters(gen, catalogue, method.input_type)
    else:
        gen.message(method.input_type)
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(method.input_type)}}}
    if rule.body not in ("", "*"):
        raise SystemExit(f"{method.name}: body {rule.body!r} is not supported")
    gen.message(method.output_type)
    if method.server_streaming:
        ok = {"description": "Server-Sent Events: one `data: {json}` line and a blank line "
                             f"per `{_component_name(method.output_type)}`.",
              "content": {"text/event-stream": {
                  "schema": {"type": "string"},
                  "x-event-schema": _ref(method.output_type)}}}
    else:
        ok = {"description": "OK", "content": {
            "application/json": {"schema": _ref(method.output_type)}}}
    operation["responses"] = {
        "200": ok, **{code: {"$ref": f"#/components/responses/{code}"} for code in _ERRORS},
        "default": {"$ref": "#/components/responses/Error"}}
    return operation


def _version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def generate(descriptor_set: Path = DESCRIPTOR_SET) -> Schema:
    """The OpenAPI document of the transcoded service in `descriptor_set`."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    catalogue = _Catalogue(files)
    bound = [(file, s, m, method)
             for file in catalogue.files
             for s, service in enumerate(file.service)
             if f"{file.package}.{service.name}" == SERVICE
             for m, method in enumerate(service.method)
             if method.options.Extensions[annotations_pb2.http].WhichOneof("pattern")
             not in (None, "custom")]  # no HTTP binding: gRPC only
    inputs = _reachable(catalogue, [method.input_type for *_, method in bound])
    outputs = _reachable(catalogue, [method.output_type for *_, method in bound])
    gen = _Generator(catalogue, outputs - inputs)
    paths: dict[str, Schema] = {}
    service_description = ""
    for file, s, m, method in bound:
        comments = _Comments(file)
        service_description = comments.of(6, s)
        rule = method.options.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        paths.setdefault(getattr(rule, verb), {})[verb] = _operation(
            gen, catalogue, method, comments.of(6, s, 2, m), verb, rule)
    gen.message(".google.rpc.Status")
    gen.schemas["Error"] = {
        "type": "object", "required": ["code", "message"],
        "description": "Every error, the server's and Envoy's own: the gRPC status code, "
                       "a message naming what is wrong, and for a bad field "
                       "google.rpc.BadRequest details.",
        "properties": {
            "code": {"type": "integer", "description": "The gRPC status code (3 is "
                     "INVALID_ARGUMENT, 5 NOT_FOUND, 10 ABORTED, 14 UNAVAILABLE, ...)."},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {
                "$ref": "#/components/schemas/google.protobuf.Any"}},
        }}
    gen.schemas["google.protobuf.Any"] = _WELL_KNOWN["google.protobuf.Any"]
    return {
        "openapi": "3.0.3",
        "info": {"title": "SarahService HTTP/JSON API", "version": _version(),
                 "description": service_description + "\n\nGenerated by `make openapi` "
                 "from sarah/v1/sarah.pb; do not edit by hand."},
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make run"}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header",
                                           "name": "x-api-key"}},
            "responses": {**{code: _error_response(text) for code, text in _ERRORS.items()},
                          "Error": _error_response("Any other error.")},
            "schemas": dict(sorted(gen.schemas.items())),
        },
        "security": [{}, {"apiKey": []}],
        "paths": dict(sorted(paths.items())),
    }


def render(document: Schema) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else OPENAPI_YAML
    out.write_text(render(generate()))


if __name__ == "__main__":
    main(sys.argv[1:])
