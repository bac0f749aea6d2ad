// The Sarah workflow as code, built with Kapso's own library @kapso/workflows (0.2.0): the
// reference graph an author pushes with `kapso push` or reads, and its no-code alternative
// with webhook nodes. The library validates and renders graphs; it runs nothing.
//
//   node kapso/workflow.js    prints every graph below, validated, as Kapso's source JSON
//
// Environment, read by the command line only: SARAH_URL (the webhook recipe's base URL,
// written into its nodes), SARAH_WORKSPACE_ID (optional, for a key bound to a workspace),
// KAPSO_PHONE_NUMBER_ID (optional, the trigger's number), KAPSO_PROVIDER_MODEL (optional).
//
// Sources for every Kapso fact used here:
// [lib]      @kapso/workflows 0.2.0, node_modules/@kapso/workflows/dist/{types,compiler,
//            validator}.js, and github.com/gokapso/kapso-workflows IMPLEMENTATION_PLAN.md
//            ("Node Matrix": runtime behaviour of each node type as Kapso's backend has it)
// [fn-node]  https://docs.kapso.ai/docs/flows/step-types/function-node
// [call]     https://docs.kapso.ai/docs/flows/step-types/call-workflow-node
// [webhook]  https://docs.kapso.ai/docs/flows/step-types/webhook-node
// [vars]     https://docs.kapso.ai/docs/flows/variables-and-context and
//            https://docs.kapso.ai/docs/flows/triggers ("Available context")
// [overview] https://docs.kapso.ai/docs/flows/overview (agent, wait and decide nodes)
// [skills]   github.com/gokapso/agent-skills skills/automate-whatsapp/references/
//            {node-types,workflow-reference,functions-reference}.md

import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";

import { START, Workflow } from "@kapso/workflows";

// The slugs of the two shipped functions, kapso/functions/sarah_load_state.js and
// sarah_save_state.js: kebab-case, as the library's slugs are ([lib] CLEAN_SLUG_PATTERN).
export const LOAD_FUNCTION = "sarah-load-state";
export const SAVE_FUNCTION = "sarah-save-state";

// Where a failed save leaves its error ([call]: save_error_to).
export const SAVE_ERROR_VAR = "sarah_save_error";

// A model name as Kapso's own examples use it ([lib] README/plan): pick one of your
// project's provider models (agent-skills' list-provider-models.js lists them).
const DEFAULT_MODEL = "gpt-5-mini";

const SARAH_PROMPT = `You are Sarah, the WhatsApp sales assistant of a business that sells to
Indonesian small businesses. Answer the lead's latest message once, in their language
(Bahasa Indonesia unless they write English), briefly and warmly.

Read the variable "sarah" first (get_variable): the lead's saved conversation, with state
(greeting, qualifying, scoring, handoff, completed), lead_score (0-100), lead_temperature
(hot, warm, cold), language (id, en) and extracted_data (name, business_type, team_size,
pain_points, goals).
- state greeting: greet the lead, say who you are, ask their name and business.
- qualifying: ask for what is still missing: name, business type, team size, pain points, goals.
- scoring: once you know enough, score the lead: hot 70-100 (clear need, budget, wants to
  start soon), warm 40-69, cold 0-39.
- a hot lead: tell them a salesperson will contact them, and set state handoff.

Before you finish, save_variable "sarah_update": an object with state, lead_score,
lead_temperature, language and extracted_data, every slot you know (copy unchanged ones
from "sarah"). Then call complete_task. Do not call handoff_to_human: the workflow saves
the conversation first and then hands hot leads to a salesperson.`;

// The agent's tools: the library accepts only Kapso's default tool names ([lib]
// DEFAULT_AGENT_TOOLS); complete_task and handoff_to_human stay on ([skills] node-types.md
// marks both required).
const AGENT_TOOLS = ["get_variable", "save_variable", "get_whatsapp_context",
  "complete_task", "handoff_to_human"];

// Top-down, as Kapso's graph editor lays nodes out ([skills] node-types.md).
function at(row, column = 0) {
  return { position: { x: 320 * column, y: 160 * row } };
}

// The bot's turn and what follows the save, shared by both recipes: the agent answers
// ([overview]: it stays at its node until complete_task), the save runs through `save_turn`,
// then the lead is handed to a salesperson or the bot waits for the next message.
function addBotTurn(workflow, { providerModel, loadNode, saveWorkflowSlug }) {
  workflow.addNode("sarah_turn", {
    type: "agent",
    systemPrompt: SARAH_PROMPT,
    providerModel,
    enabledDefaultTools: AGENT_TOOLS,
    maxIterations: 6,
  }, { displayName: "Sarah answers, qualifies and scores", ...at(2) });
  // The save is a call to a child workflow holding the save node, because a call node is
  // the one node that goes on after a failure: Kapso stores the child's error in
  // save_error_to and continues on `next` ([call]). A function or webhook node has no
  // failure edge: it advances on `next` only, and a decide node is the only branching node
  // ([lib] plan, "function": "Always advances on next"; validator.js warns about any other
  // edge). Kapso's docs do not say what a function node does with a non-2xx answer; we build
  // for the contract: a save that fails after its retries (503) fails the child workflow.
  workflow.addNode("save_turn", {
    type: "call",
    workflowSlug: saveWorkflowSlug,
    saveErrorTo: SAVE_ERROR_VAR,
  }, { displayName: "Save the turn (errors go to vars.sarah_save_error)", ...at(3) });
  // The first condition is the fallback when the model answers no label ([lib] plan,
  // "decide"), so a doubtful answer keeps the bot talking rather than handing over.
  workflow.addNode("route_lead", {
    type: "decide",
    decisionType: "ai",
    providerModel,
    conditions: [
      { label: "continue", description: "Anything else: the bot waits for the lead's next message." },
      { label: "hot", description: "Sarah has just told the lead that a salesperson will contact them (a hot lead, state handoff)." },
    ],
  }, { displayName: "Hot lead?", ...at(4) });
  workflow.addNode("handoff_to_sales", {
    type: "handoff",
    reason: "hot_lead",
    contextData: {
      lead_score: "{{vars.sarah_update.lead_score}}",
      name: "{{vars.sarah_update.extracted_data.name}}",
      business_type: "{{vars.sarah_update.extracted_data.business_type}}",
    },
  }, { displayName: "Hand the hot lead to a salesperson", ...at(5, 1) });
  workflow.addNode("wait_reply", { type: "wait_for_response" },
    { displayName: "Wait for the lead's next message", ...at(5) });

  workflow.addEdge(loadNode, "sarah_turn");
  workflow.addEdge("sarah_turn", "save_turn");
  // The failure edge: `save_turn` leaves on `next` whether its save succeeded or failed
  // after its retries. On a failure the bot has answered, nothing was saved, and the
  // conversation goes on; the next turn loads the state again.
  workflow.addEdge("save_turn", "route_lead");
  workflow.addEdge("route_lead", "handoff_to_sales", { label: "hot" });
  workflow.addEdge("route_lead", "wait_reply", { label: "continue" });
  workflow.addEdge("wait_reply", loadNode);
}

function addTrigger(workflow, phoneNumberId) {
  workflow.addTrigger(phoneNumberId
    ? { type: "inbound_message", phoneNumberId }
    : { type: "inbound_message" });
}

/** The reference graph: the two shipped functions around the bot's turn. */
export function functionWorkflows({ phoneNumberId, providerModel = DEFAULT_MODEL } = {}) {
  const main = new Workflow("sarah-lead-bot", { name: "Sarah lead bot" });
  addTrigger(main, phoneNumberId);
  main.addNode(START, at(0));
  // No saveResponseTo: the function answers {"vars": {"sarah": …}}, and Kapso merges those
  // vars into the workflow's itself ([fn-node], [skills] functions-reference.md).
  main.addNode("load_state", { type: "function", functionSlug: LOAD_FUNCTION },
    { displayName: "Load the lead's state (vars.sarah)", ...at(1) });
  main.addEdge(START, "load_state");
  addBotTurn(main, { providerModel, loadNode: "load_state", saveWorkflowSlug: "sarah-save-turn" });

  // The child Kapso runs with a copy of the parent's vars and context and the same WhatsApp
  // conversation, and whose vars merge back when it ends ([call]): the save function reads
  // vars.sarah_update and answers vars.sarah.
  const save = new Workflow("sarah-save-turn", { name: "Sarah: save the turn" });
  save.addNode(START, at(0));
  save.addNode("save_state", { type: "function", functionSlug: SAVE_FUNCTION },
    { displayName: "Save vars.sarah_update", ...at(1) });
  save.addEdge(START, "save_state");
  return [main, save];
}

/** The no-code alternative: Kapso's webhook nodes call the HTTP door directly. Each body
 * and URL is a template Kapso renders: {{context.phone_number}} and {{vars.…}} ([vars],
 * [webhook]); ${ENV:NAME} is a project secret, shown by Kapso's docs in headers ([webhook]),
 * so the base URL is written into the nodes here instead. */
export function webhookWorkflows({ sarahUrl = "https://sarah.example.com", workspaceId = "",
  phoneNumberId, providerModel = DEFAULT_MODEL } = {}) {
  const base = sarahUrl.replace(/\/+$/, "");
  const workspace = workspaceId ? { workspace_id: workspaceId } : {};
  const workspaceQuery = workspaceId ? `&workspace_id=${encodeURIComponent(workspaceId)}` : "";
  const main = new Workflow("sarah-lead-bot-webhooks", { name: "Sarah lead bot (webhook nodes)" });
  addTrigger(main, phoneNumberId);
  main.addNode(START, at(0));
  // The phone is the only key: Kapso documents {{context.phone_number}} and no BSUID
  // placeholder for workflows ([vars]), so a lead with no phone number (BSUID
  // only) cannot be read or written this way: the service refuses the empty key with 400.
  // The two functions read the BSUID from the body Kapso sends them.
  main.addNode("load_state", {
    type: "webhook",
    method: "GET",
    url: `${base}/sarah/state?contact_phone={{context.phone_number}}${workspaceQuery}`,
    headers: { "x-api-key": "${ENV:SARAH_API_KEY}" },
    saveResponseTo: "sarah",
  }, { displayName: "Read the lead's state (vars.sarah)", ...at(1) });
  main.addEdge(START, "load_state");
  addBotTurn(main, { providerModel, loadNode: "load_state",
    saveWorkflowSlug: "sarah-save-turn-webhook" });

  // A template renders text, so the body carries the text and number slots the bot sets
  // every turn; team_size and pain_points (a number that may be unknown, a list) and the
  // request_id (no documented placeholder for the WhatsApp message id) are the functions'.
  const save = new Workflow("sarah-save-turn-webhook", { name: "Sarah: save the turn (webhook)" });
  save.addNode(START, at(0));
  save.addNode("save_state", {
    type: "webhook",
    method: "POST",
    url: `${base}/sarah/state`,
    headers: { "x-api-key": "${ENV:SARAH_API_KEY}", "content-type": "application/json" },
    bodyTemplate: {
      contact_phone: "{{context.phone_number}}",
      ...workspace,
      state: "{{vars.sarah_update.state}}",
      lead_score: "{{vars.sarah_update.lead_score}}",
      lead_temperature: "{{vars.sarah_update.lead_temperature}}",
      language: "{{vars.sarah_update.language}}",
      extracted_data: {
        name: "{{vars.sarah_update.extracted_data.name}}",
        business_type: "{{vars.sarah_update.extracted_data.business_type}}",
        goals: "{{vars.sarah_update.extracted_data.goals}}",
      },
      add_messages: 1,
    },
    saveResponseTo: "sarah",
  }, { displayName: "Write vars.sarah_update", ...at(1) });
  save.addEdge(START, "save_state");
  return [main, save];
}

/** Each workflow as Kapso's source files ([lib] toSourceFiles: workflow.yaml's metadata
 * and definition.json), with the library's warnings; its errors throw. */
export function render(workflows) {
  const out = {};
  for (const workflow of workflows) {
    const { metadata, definition } = workflow.toSourceFiles();
    out[workflow.slug] = { metadata, definition, warnings: workflow.validate().warnings };
  }
  return out;
}

// `kapso push` reads a workflow.js whose default export is the Workflow ([skills]).
export default functionWorkflows()[0];

function main() {
  const env = process.env;
  const common = { phoneNumberId: env.KAPSO_PHONE_NUMBER_ID || undefined,
    providerModel: env.KAPSO_PROVIDER_MODEL || DEFAULT_MODEL };
  const rendered = render([
    ...functionWorkflows(common),
    ...webhookWorkflows({ ...common, sarahUrl: env.SARAH_URL || undefined,
      workspaceId: env.SARAH_WORKSPACE_ID || "" }),
  ]);
  process.stdout.write(`${JSON.stringify(rendered, null, 2)}\n`);
  // Kapso's skills treat warnings as blockers before a graph is pushed ([skills]
  // workflow-reference.md); so does this check.
  const warned = Object.entries(rendered).filter(([, source]) => source.warnings.length);
  for (const [slug, source] of warned) {
    for (const warning of source.warnings) console.error(`${slug}: ${warning.message}`);
  }
  process.exitCode = warned.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main();
}
