// sarah_save_state: a Kapso function that writes the lead's conversation to SarahService
// after the bot has answered, counting the message.
//
// Paste this whole file into a Kapso function, deploy it, and point a workflow's Function
// node at it, after the step that sets the workflow variable `sarah_update`: an object of
// the fields to change, any of
//   state, lead_score, lead_temperature, extracted_data, language, clear, request_id
// (other keys are not sent). Absent fields keep their stored values; each save adds one
// message to message_count. It carries a request_id, the idempotency key: sarah_update's,
// else the id of the newest inbound WhatsApp message, so a turn retried or delivered twice
// counts once. It also sends the lead's username and parent BSUID when Kapso has them.
// Secrets (the function's Secrets tab):
//   SARAH_URL           SarahService's public base URL, e.g. https://sarah.example.com
//   SARAH_API_KEY       the API key SarahService issued for this project (sent as x-api-key)
//   SARAH_WORKSPACE_ID  optional: the workspace, needed when the key is bound to one
// It answers:
//   200 {"vars": {"sarah": <the conversation as stored>}}: the node merges `vars` into the
//       workflow's variables;
//   400 when the body names neither a BSUID nor a phone number (nothing is called);
//   SarahService's own status and JSON error {code, message, details} when it refuses the
//       save (a score of 140, say): nothing was saved;
//   502 when SARAH_URL answers 2xx with no conversation (it names something else);
//   503 {code, message, ...} when SarahService stayed busy or unreachable for 5 s
//       (429, 502, 503, 504 and network errors are retried until then), or when
//       SARAH_URL is not set: the save may not have happened, and the same turn can be
//       saved again later with the same request_id.
//
// Kapso's calling conventions, as its documentation states them:
// - https://docs.kapso.ai/docs/functions/overview.md: functions run on Cloudflare Workers
//   and define `async function handler(request, env)`; secrets are read from `env`.
// - https://docs.kapso.ai/docs/flows/step-types/function-node.md: the body a Function node
//   sends (`execution_context` with vars/system/context, `whatsapp_context` with
//   conversation and messages), read with `await request.json()`.
// - gokapso/agent-skills, skills/automate-whatsapp/references/functions-reference.md: no
//   `export` and no arrow function, return a `Response`; a Function node's answer
//   `{"vars": {...}}` updates the workflow's variables.
// The fields of whatsapp_context.conversation (BSUID, username) and of its messages (id,
// direction) are as SarahService's contract (v1.2) states them: Kapso's pages leave them
// unspecified.

// The fields of sarah_update that are sent (UpsertState's, as the contract lists them).
const SARAH_UPDATE_FIELDS = [
  "state", "lead_score", "lead_temperature", "extracted_data", "language", "clear", "request_id",
];

async function handler(request, env) {
  const body = await request.json().catch(() => ({}));
  const lead = sarahLead(body);
  if (!lead) return sarahNoLead();
  const update = body?.execution_context?.vars?.sarah_update ?? {};
  const fields = { ...lead.keys, ...lead.about };
  for (const name of SARAH_UPDATE_FIELDS) {
    if (update[name] !== undefined && update[name] !== null) fields[name] = update[name];
  }
  fields.add_messages = 1;
  const requestId = sarahText(update.request_id) || newestInboundMessageId(body);
  if (requestId) fields.request_id = requestId;
  else delete fields.request_id;
  return sarahCall(env, "POST", fields);
}

// The id of the newest inbound message: the last one in whatsapp_context.messages whose
// direction is "inbound"; "" when there is none.
function newestInboundMessageId(body) {
  const messages = body?.whatsapp_context?.messages;
  if (!Array.isArray(messages)) return "";
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.direction === "inbound") return sarahText(messages[i].id);
  }
  return "";
}

// ---- shared part: identical in sarah_load_state.js and sarah_save_state.js ----
// (Kapso takes one file per function, so both carry it; a test keeps the copies equal.)

// Retried: rate-limited (429), and SarahService or its proxy unavailable (502, 503, 504).
const SARAH_RETRIED = [429, 502, 503, 504];
const SARAH_BUDGET_MS = 5000; // retries end 5 s after the first call
const SARAH_LAST_TRY_MS = 250; // the least time left for a last attempt

// The first value that is a non-empty string or a number, as trimmed text; else "".
// So null, "" and an absent field are alike.
function sarahText(...values) {
  for (const value of values) {
    const text = typeof value === "number" ? String(value) : typeof value === "string" ? value.trim() : "";
    if (text) return text;
  }
  return "";
}

// Who the lead is, from the body Kapso sends: `keys` (BSUID and phone, whichever are
// present) and `about` (parent BSUID and username, when present); null with no key.
function sarahLead(body) {
  const conversation = body?.whatsapp_context?.conversation ?? {};
  const context = body?.execution_context?.context ?? {};
  const found = {
    business_scoped_user_id: sarahText(conversation.business_scoped_user_id, context.business_scoped_user_id),
    contact_phone: sarahText(conversation.phone_number, context.phone_number, context.contact?.wa_id),
    parent_business_scoped_user_id:
      sarahText(conversation.parent_business_scoped_user_id, context.parent_business_scoped_user_id),
    username: sarahText(conversation.username, context.username),
  };
  const keys = sarahPick(found, ["business_scoped_user_id", "contact_phone"]);
  if (Object.keys(keys).length === 0) return null;
  return { keys, about: sarahPick(found, ["parent_business_scoped_user_id", "username"]) };
}

// The fields of `found` among `names` that are not empty.
function sarahPick(found, names) {
  const picked = {};
  for (const name of names) if (found[name]) picked[name] = found[name];
  return picked;
}

function sarahNoLead() {
  return sarahAnswer(400, {
    code: 3,
    message: "no lead in the body: it has no business_scoped_user_id (whatsapp_context.conversation " +
      "or execution_context.context) and no phone number (whatsapp_context.conversation.phone_number, " +
      "execution_context.context.phone_number or execution_context.context.contact.wa_id)",
    details: [],
  });
}

function sarahAnswer(status, json) {
  return new Response(JSON.stringify(json), { status, headers: { "content-type": "application/json" } });
}

// The JSON of a reply; text that is not JSON comes back as an error object.
async function sarahJson(reply) {
  const text = await reply.text();
  try {
    return JSON.parse(text);
  } catch {
    return { code: 2, message: `HTTP ${reply.status}, not JSON: ${text.slice(0, 300)}`, details: [] };
  }
}

// Calls `method` /sarah/state with `fields` (the query string of a GET, the JSON body of a
// POST) and answers as the top of this file says. A 429, 502, 503, 504 or a network error
// is retried, waiting as retry-after says (else 0.2 s, 0.4 s, 0.8 s...), until 5 s after
// the first call. That is safe: a read changes nothing, a save carries its request_id.
async function sarahCall(env, method, fields) {
  const call = sarahRequest(env, method, fields);
  if (call instanceof Response) return call;
  const deadline = Date.now() + SARAH_BUDGET_MS;
  let last = null; // what the latest attempt got
  for (let attempt = 1; ; attempt++) {
    // Each backoff cut at random by up to half: many leads retrying together spread out.
    let wait = 200 * 2 ** (attempt - 1) * (0.5 + Math.random() / 2);
    let told = false; // whether retry-after said how long
    try {
      const signal = AbortSignal.timeout(Math.max(deadline - Date.now(), 1));
      const reply = await fetch(call.url, { ...call.init, signal });
      if (!SARAH_RETRIED.includes(reply.status)) return sarahAnswerFor(reply);
      last = { status: reply.status, error: await sarahJson(reply) };
      const after = (reply.headers.get("retry-after") ?? "").trim();
      if (/^\d+(\.\d+)?$/.test(after)) {
        wait = Number(after) * 1000;
        told = true;
      }
    } catch (error) {
      last = { status: 0, error: { code: 14, message: `no answer: ${error?.message ?? error}` } };
    }
    const left = deadline - Date.now() - SARAH_LAST_TRY_MS;
    if (left <= 0 || (told && wait > left)) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(wait, left)));
  }
  const got = last.status ? `HTTP ${last.status}: ${last.error?.message ?? ""}` : last.error.message;
  return sarahAnswer(503, {
    code: 14,
    message: `SarahService did not take the call within ${SARAH_BUDGET_MS / 1000} s of retries; ` +
      `the last attempt got ${got}`,
    details: [],
    last_status: last.status, // 0: no answer at all
    last_error: last.error,
  });
}

// The URL and fetch options of the call, with the workspace and the API key when those
// secrets are set; or the answer saying SARAH_URL is missing.
function sarahRequest(env, method, fields) {
  const base = sarahText(env.SARAH_URL).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/i.test(base)) {
    return sarahAnswer(503, {
      code: 14,
      message: "SARAH_URL is not set to an http(s) URL: add SarahService's public base URL " +
        "(https://...) on this function's Secrets tab",
      details: [],
    });
  }
  const workspace = sarahText(env.SARAH_WORKSPACE_ID);
  const sent = workspace ? { ...fields, workspace_id: workspace } : fields;
  const headers = { accept: "application/json" };
  const key = sarahText(env.SARAH_API_KEY);
  if (key) headers["x-api-key"] = key;
  if (method === "GET") {
    // URLSearchParams encodes "+" as %2B: +14155550123 stays American.
    return { url: `${base}/sarah/state?${new URLSearchParams(sent)}`, init: { method, headers } };
  }
  headers["content-type"] = "application/json";
  return { url: `${base}/sarah/state`, init: { method, headers, body: JSON.stringify(sent) } };
}

// The function's answer to a reply that is not retried: the conversation, or the
// service's own status and JSON error.
async function sarahAnswerFor(reply) {
  const json = await sarahJson(reply);
  if (!reply.ok) return sarahAnswer(reply.status, json);
  if (typeof json?.etag === "string") return sarahAnswer(200, { vars: { sarah: json } });
  // A 2xx that is no conversation: SARAH_URL names something else. Never report it saved.
  return sarahAnswer(502, {
    code: 2,
    message: `SARAH_URL answered HTTP ${reply.status} with no SarahService conversation: ` +
      "is it SarahService's base URL?",
    details: [],
  });
}
// ---- end of the shared part ----
