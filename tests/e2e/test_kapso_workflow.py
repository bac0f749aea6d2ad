"""kapso/workflow.js, built by Kapso's own @kapso/workflows under the venv's Node: every graph
passes the library's validation; every function node names a shipped function file; a save
that fails goes on to the bot's next step; and every webhook node's request, its placeholders
rendered from a sample Kapso context, is accepted by the real HTTP door (a server and Envoy
that require API keys) — or, for a lead with no phone number, refused with nothing stored,
the limit docs/kapso.md gives for the webhook recipe.

The placeholder renderer below stands in for Kapso's templating only, with the syntax of
Kapso's docs: `{{context.phone_number}}`, `{{vars.…}}`, `${ENV:NAME}`."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from client import SarahClient
from deploy import ROOT
from harness.envoy import EnvoyProcess
from harness.http_calls import request
from sarah.v1 import sarah_pb2 as pb
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.docs import docs_blocks

KEY, SHOP_KEY = "kapso-key-7c1e", "kapso-toko-key-52aa"
_WORKFLOW_JS = ROOT / "kapso" / "workflow.js"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_SECRET = re.compile(r"\$\{ENV:([A-Za-z0-9_]+)\}")

# What the bot's step leaves in vars.sarah_update, and the execution's context as Kapso's
# docs show it (a lead with a phone; one known by its BSUID only, phone null).
_UPDATE = {"state": "qualifying", "lead_score": 45, "lead_temperature": "warm", "language": "id",
           "extracted_data": {"name": "Budi", "business_type": "warung kopi",
                              "goals": "lebih banyak pesanan online"}}
PHONE_ONLY = {
    "context": {"channel": "whatsapp", "phone_number": "+6281234567890",
                "contact": {"wa_id": "6281234567890", "profile_name": "Budi"}},
    "vars": {"sarah_update": _UPDATE},
}
BSUID_ONLY = {
    "context": {"channel": "whatsapp", "phone_number": None,
                "business_scoped_user_id": "ID.1648738043044942",
                "contact": {"wa_id": None, "profile_name": "Dewi"}},
    "vars": {"sarah_update": _UPDATE},
}


def build(**env: str) -> dict[str, Any]:
    """`node kapso/workflow.js` with `env`: every graph as Kapso's source JSON, by slug. It
    exits non-zero on a validation error or warning."""
    node = Path(sys.executable).parent / "node"
    assert node.exists(), "no Node in the venv: run make .venv/.installed"
    done = subprocess.run([str(node), str(_WORKFLOW_JS)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    built: dict[str, Any] = json.loads(done.stdout)
    return built


def nodes(built: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workflow slug, node) for every node of every graph."""
    for slug, source in built.items():
        for node in source["definition"]["nodes"]:
            yield slug, node


def of_type(built: dict[str, Any], node_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [(slug, node) for slug, node in nodes(built) if node["data"]["node_type"] == node_type]


def render(template: Any, scope: dict[str, Any], secrets: dict[str, str],
           keep_unknown: bool = False) -> Any:
    """`template` with Kapso's placeholders filled in: `{{namespace.path}}` from the
    execution's scope, `${ENV:NAME}` from the project's secrets. A template renders text,
    so a value lands as text (JSON numbers written in the template stay numbers). Kapso's
    docs do not say what a missing or null value renders as: "" here, or the placeholder
    left as written with `keep_unknown`."""
    if isinstance(template, dict):
        return {k: render(v, scope, secrets, keep_unknown) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, scope, secrets, keep_unknown) for v in template]
    if not isinstance(template, str):
        return template

    def value(match: re.Match[str]) -> str:
        found: Any = scope
        for part in match.group(1).split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if found is None:
            return match.group(0) if keep_unknown else ""
        return found if isinstance(found, str) else json.dumps(found)

    return _SECRET.sub(lambda m: secrets[m.group(1)], _PLACEHOLDER.sub(value, template))


def send(config: dict[str, Any], envoy: EnvoyProcess) -> tuple[int, object]:
    """A rendered webhook node's request, sent to Envoy as Kapso would send it: the URL's
    path and query exactly as rendered (a phone's `+` unencoded), the body as JSON."""
    url = urlsplit(config["url"])
    assert (url.hostname, url.port) == ("127.0.0.1", envoy.port), config["url"]
    path = url.path + (f"?{url.query}" if url.query else "")
    body = config.get("body_template")
    status, _, answer = request("127.0.0.1", envoy.port, config.get("method", "POST"), path,
                                None if body is None else json.dumps(body), config["headers"])
    return status, answer


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    return build(SARAH_URL="https://sarah.example.com")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY} * kapso\n{SHOP_KEY} toko kapso-toko\n")
    running = create_server(Config(
        listen="127.0.0.1:0", database_url=f"sqlite:///{tmp_path / 'sarah.db'}",
        api_keys_file=str(keys), metrics_listen="127.0.0.1:0", workers=1))
    try:
        yield running
    finally:
        running.shutdown(grace=None)


@pytest.fixture
def envoy(server: RunningServer, tmp_path: Path) -> Iterator[EnvoyProcess]:
    proxy = EnvoyProcess(server.port, tmp_path)
    try:
        yield proxy
    finally:
        proxy.stop()


def test_every_graph_builds_and_passes_the_librarys_validation(built: dict[str, Any]) -> None:
    assert set(built) == {"sarah-lead-bot", "sarah-save-turn", "sarah-lead-bot-webhooks",
                          "sarah-save-turn-webhook"}
    for slug, source in built.items():
        assert source["warnings"] == [], (slug, source["warnings"])
        assert source["metadata"]["slug"] == slug
    for slug in ("sarah-lead-bot", "sarah-lead-bot-webhooks"):
        [trigger] = built[slug]["metadata"]["triggers"]
        assert trigger["triggerType"] == "inbound_message"
        types = {n["id"]: n["data"]["node_type"] for n in built[slug]["definition"]["nodes"]}
        assert types == {"start": "start", "load_state": "webhook" if "webhooks" in slug
                         else "function", "sarah_turn": "agent", "save_turn": "call",
                         "route_lead": "decide", "handoff_to_sales": "handoff",
                         "wait_reply": "wait_for_response"}, types


def test_every_function_node_names_a_shipped_function(built: dict[str, Any]) -> None:
    """Function nodes, function decisions and agent function tools: each slug's file is in
    kapso/functions/ (sarah-load-state → sarah_load_state.js), the file pasted into Kapso
    under that slug."""
    slugs = {node["data"]["config"]["function_slug"] for _, node in nodes(built)
             if "function_slug" in node["data"]["config"]}
    slugs |= {tool["function_slug"] for _, node in of_type(built, "agent")
              for tool in node["data"]["config"].get("flow_agent_function_tools", [])}
    assert slugs == {"sarah-load-state", "sarah-save-state"}
    missing = [slug for slug in sorted(slugs)
               if not (ROOT / "kapso" / "functions" / f"{slug.replace('-', '_')}.js").is_file()]
    assert not missing, f"function nodes name functions that are not shipped: {missing}"


def test_a_save_that_fails_goes_on_to_the_bots_next_step(built: dict[str, Any]) -> None:
    """The save runs in a child workflow through a call node, the node that records a
    failure in save_error_to and continues on `next`; so a save refused after its retries
    leaves the bot's answer sent and the conversation going."""
    for slug, child in (("sarah-lead-bot", "sarah-save-turn"),
                        ("sarah-lead-bot-webhooks", "sarah-save-turn-webhook")):
        definition = built[slug]["definition"]
        [call] = [n for n in definition["nodes"] if n["id"] == "save_turn"]
        assert call["data"]["config"] == {"workflow_slug": child,
                                          "save_error_to": "sarah_save_error"}
        edges = {(e["source"], e["label"]): e["target"] for e in definition["edges"]}
        assert edges[("sarah_turn", "next")] == "save_turn"
        assert [(s, label) for s, label in edges if s == "save_turn"] == [("save_turn", "next")]
        assert edges[("save_turn", "next")] == "route_lead"
        assert edges[("route_lead", "continue")] == "wait_reply"
        assert edges[("wait_reply", "next")] == "load_state"
        assert edges[("route_lead", "hot")] == "handoff_to_sales"
        [save] = [n for n in built[child]["definition"]["nodes"] if n["id"] == "save_state"]
        assert save["data"]["node_type"] in {"function", "webhook"}


def test_every_call_node_names_a_workflow_built_here(built: dict[str, Any]) -> None:
    called = {node["data"]["config"]["workflow_slug"] for _, node in of_type(built, "call")}
    assert called and called <= set(built)


def test_the_documented_webhook_nodes_are_the_ones_workflow_js_builds(
        built: dict[str, Any]) -> None:
    """docs/kapso.md shows the recipe's two node configs as `node kapso/workflow.js` prints
    them with SARAH_URL=https://sarah.example.com; its other JSON examples are JSON."""
    shown = [json.loads(block) for block in
             docs_blocks("docs/kapso.md", "Calling from Kapso (HTTP/JSON through Envoy)", "json")]
    webhooks = [node["data"]["config"] for _, node in of_type(built, "webhook")]
    assert [block for block in shown if "url" in block] == webhooks


def test_the_webhook_recipe_reads_and_writes_a_phone_lead(envoy: EnvoyProcess) -> None:
    built = build(SARAH_URL=f"http://127.0.0.1:{envoy.port}/")  # a trailing slash tolerated
    secrets = {"SARAH_API_KEY": KEY}
    [(_, load)] = of_type({"main": built["sarah-lead-bot-webhooks"]}, "webhook")
    [(_, save)] = of_type({"child": built["sarah-save-turn-webhook"]}, "webhook")
    read = render(load["data"]["config"], PHONE_ONLY, secrets)
    write = render(save["data"]["config"], PHONE_ONLY, secrets)
    for config in (read, write):
        assert not re.search(r"\{\{|\$\{", json.dumps(config)), config
        assert config["headers"]["x-api-key"] == KEY

    status, before = send(read, envoy)
    assert status == 200, before
    assert isinstance(before, dict) and (before["state"], before["etag"]) == ("greeting", "")
    for turn in (1, 2):
        status, lead = send(write, envoy)
        assert status == 200, lead
        assert isinstance(lead, dict) and lead["message_count"] == turn, lead
    status, after = send(read, envoy)
    assert status == 200 and isinstance(lead, dict) and after == lead
    assert (lead["contact_phone"], lead["state"], lead["lead_score"]) == (
        "+6281234567890", "qualifying", 45)
    assert lead["extracted_data"]["business_type"] == "warung kopi"
    with SarahClient(f"127.0.0.1:{envoy.port}", token=KEY) as sarah:
        [stored] = list(sarah.iter_leads())
    assert (stored.contact_phone, pb.Temperature.Name(stored.lead_temperature)) == (
        "+6281234567890", "warm")


def test_the_webhook_recipe_sends_the_workspace_a_bound_key_needs(envoy: EnvoyProcess) -> None:
    built = build(SARAH_URL=f"http://127.0.0.1:{envoy.port}", SARAH_WORKSPACE_ID="toko")
    secrets = {"SARAH_API_KEY": SHOP_KEY}
    [(_, load)] = of_type({"main": built["sarah-lead-bot-webhooks"]}, "webhook")
    [(_, save)] = of_type({"child": built["sarah-save-turn-webhook"]}, "webhook")
    status, lead = send(render(save["data"]["config"], PHONE_ONLY, secrets), envoy)
    assert status == 200 and isinstance(lead, dict) and lead["workspace_id"] == "toko", lead
    status, read = send(render(load["data"]["config"], PHONE_ONLY, secrets), envoy)
    assert status == 200 and read == lead


def test_every_placeholder_of_the_write_must_resolve(envoy: EnvoyProcess) -> None:
    """docs/kapso.md's word on the recipe: an empty `state` is refused, an empty `name` is
    stored as "" (over the name stored before), so the bot sets every field every turn."""
    built = build(SARAH_URL=f"http://127.0.0.1:{envoy.port}")
    secrets = {"SARAH_API_KEY": KEY}
    [(_, save)] = of_type({"child": built["sarah-save-turn-webhook"]}, "webhook")
    status, _ = send(render(save["data"]["config"], PHONE_ONLY, secrets), envoy)
    assert status == 200
    no_state = {**PHONE_ONLY, "vars": {"sarah_update": {**_UPDATE, "state": None}}}
    status, answer = send(render(save["data"]["config"], no_state, secrets), envoy)
    assert status == 400 and isinstance(answer, dict) and "state" in answer["message"], answer
    no_name = {**PHONE_ONLY, "vars": {"sarah_update": {
        **_UPDATE, "extracted_data": {**_UPDATE["extracted_data"], "name": None}}}}
    status, lead = send(render(save["data"]["config"], no_name, secrets), envoy)
    assert status == 200 and isinstance(lead, dict) and lead["extracted_data"]["name"] == "", lead


@pytest.mark.parametrize("keep_unknown", [False, True], ids=["empty", "kept"])
def test_the_webhook_recipe_refuses_a_lead_with_no_phone_and_stores_nothing(
        envoy: EnvoyProcess, keep_unknown: bool) -> None:
    """The recipe's documented limit: no placeholder carries a BSUID, so a lead known by
    its BSUID only gets a 400 (however Kapso renders the null phone), never a wrong lead."""
    built = build(SARAH_URL=f"http://127.0.0.1:{envoy.port}")
    secrets = {"SARAH_API_KEY": KEY}
    [(_, load)] = of_type({"main": built["sarah-lead-bot-webhooks"]}, "webhook")
    [(_, save)] = of_type({"child": built["sarah-save-turn-webhook"]}, "webhook")
    for node in (load, save):
        status, answer = send(render(node["data"]["config"], BSUID_ONLY, secrets,
                                     keep_unknown), envoy)
        assert status == 400, answer
        assert isinstance(answer, dict) and answer["code"] == 3, answer
    with SarahClient(f"127.0.0.1:{envoy.port}", token=KEY) as sarah:
        assert list(sarah.iter_leads()) == []
