// SarahService over gRPC-Web from Node, through Envoy, with the generated stubs and
// Connect-ES's web transport (the one a browser uses). tests/e2e/test_grpc_web.py runs one
// scenario per Node process against a real server and Envoy:
//
//   node ts/test/grpc_web.ts unary|watch|errors
//
// with SARAH_URL (Envoy), SARAH_API_KEY (a key bound to SARAH_WORKSPACE_ID) and
// SARAH_ADMIN_KEY (a `*` key). A failed check exits non-zero; the last line printed is JSON
// for the Python side to check against the proto.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  EventKind, ImportOutcome, type LeadEvent, SarahAdminService, SarahService, State, Temperature,
} from "../gen/sarah/v1/sarah_pb.js";

const url = process.env.SARAH_URL!;
const workspaceId = process.env.SARAH_WORKSPACE_ID!;
const called = new Set<string>();  // "Service/Method" of every call that went out

function transport(key?: string): Transport {
  const metadata: Interceptor = (next) => (request) => {
    called.add(`${request.service.typeName}/${request.method.name}`);
    if (key) request.header.set("x-api-key", key);
    return next(request);
  };
  return createGrpcWebTransport({ baseUrl: url, interceptors: [metadata] });
}

const sarah = createClient(SarahService, transport(process.env.SARAH_API_KEY));

async function refusal(call: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await call();
  } catch (error) {
    return ConnectError.from(error);
  }
  assert.fail("the call succeeded");
}

// `count` events that are not heartbeats, from `sinceRevision` on; then the stream is closed.
async function watch(sinceRevision: bigint, count: number): Promise<LeadEvent[]> {
  const events: LeadEvent[] = [];
  for await (const event of sarah.watchLeads({ workspaceId, sinceRevision })) {
    if (event.kind === EventKind.heartbeat) continue;
    events.push(event);
    if (events.length === count) break;
  }
  return events;
}

async function unary(): Promise<object> {
  const phone = "+6281234567890", moved = "+6281399990000";
  const written = await sarah.upsertState({
    contactPhone: "0812-3456-7890", workspaceId, state: State.qualifying, leadScore: 82,
    leadTemperature: Temperature.hot, extractedData: { name: "Ayu", painPoints: ["stok"] },
    addMessages: 1, requestId: "wamid.TS1",
  });
  assert.equal(written.contactPhone, phone);  // normalised to E.164
  assert.equal(written.messageCount, 1);
  assert.equal(written.extractedData?.name, "Ayu");
  const retried = await sarah.upsertState({ contactPhone: phone, workspaceId, addMessages: 1,
                                            requestId: "wamid.TS1" });
  assert.equal(retried.messageCount, 1);  // the same request_id is applied once

  const read = await sarah.getState({ contactPhone: "6281234567890", workspaceId });
  assert.deepEqual([read.state, read.leadScore, read.leadTemperature],
                   [State.qualifying, 82, Temperature.hot]);
  assert.ok(read.updatedAt && read.updatedAt.seconds > 0n);

  const page = await sarah.listLeads({ workspaceId, temperature: Temperature.hot });
  assert.deepEqual(page.leads.map((lead) => lead.contactPhone), [phone]);
  assert.ok(page.revision > 0n);
  const stats = await sarah.getStats({ workspaceId });
  assert.deepEqual([stats.total, stats.hot, stats.byState?.qualifying], [1, 1, 1]);

  const renamed = await sarah.changeIdentity({ workspaceId, contactPhone: phone,
                                               newContactPhone: moved, requestId: "wamid.TS2" });
  assert.equal(renamed.contactPhone, moved);
  const history = await sarah.listEvents({ workspaceId, contactPhone: moved });
  assert.ok(history.events.length >= 2);
  assert.ok(history.events.every((event) => event.kind === EventKind.upserted));
  const activity = await sarah.getActivity({ workspaceId, timeZone: "Asia/Jakarta", days: 7 });
  assert.equal(activity.days.length, 7);
  assert.equal(activity.days.reduce((sum, day) => sum + day.newLeads, 0), 1);

  assert.equal((await sarah.deleteState({ workspaceId, contactPhone: moved })).deleted, true);
  assert.equal((await sarah.getState({ workspaceId, contactPhone: moved })).etag, "");

  const admin = createClient(SarahAdminService, transport(process.env.SARAH_ADMIN_KEY));
  const exported = timestampFromDate(new Date("2025-01-02T03:04:05Z"));
  const imported = await admin.importConversations({ conversations: [{
    contactPhone: "+6281255550000", workspaceId, state: State.handoff, leadScore: 60,
    createdAt: exported, updatedAt: exported }] });
  assert.deepEqual(imported.results.map((result) => [result.outcome, result.reason]),
                   [[ImportOutcome.imported, ""]]);
  return { called: [...called].sort() };
}

async function watchScenario(): Promise<object> {
  const { revision } = await sarah.getStats({ workspaceId });
  const phones = ["+6281211110001", "+6281211110002", "+6281211110003"];
  for (const contactPhone of phones) {
    await sarah.upsertState({ contactPhone, workspaceId, addMessages: 1 });
  }
  // Listed, then watched from the listing's revision: every later write, in commit order.
  const events = await watch(revision, 3);
  assert.deepEqual(events.map((event) => event.conversation?.contactPhone), phones);
  assert.ok(events.every((event) => event.kind === EventKind.upserted));
  assert.ok(events[0].revision > revision && events[1].revision > events[0].revision);
  // Resumed after the first: exactly the other two.
  const resumed = await watch(events[0].revision, 2);
  assert.deepEqual(resumed.map((event) => event.revision), events.slice(1).map((e) => e.revision));
  // Live: the stream is open before the write it then delivers.
  const last = events[2].revision;
  const live = watch(last, 1);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await sarah.upsertState({ contactPhone: phones[0], workspaceId, leadScore: 30 });
  const [change] = await live;
  assert.deepEqual([change.conversation?.contactPhone, change.changed],
                   [phones[0], ["lead_score"]]);
  return { revisions: events.map((event) => String(event.revision)),
           resumed: resumed.map((event) => String(event.revision)) };
}

async function errors(): Promise<object> {
  const invalid = await refusal(() => sarah.upsertState({
    contactPhone: "08123", workspaceId, leadScore: 140 }));
  assert.equal(invalid.code, Code.InvalidArgument);
  const fields = invalid.findDetails(BadRequestSchema)
    .flatMap((details) => details.fieldViolations.map((violation) => violation.field));

  const keyless = createClient(SarahService, transport());
  const unauthenticated = await refusal(() => keyless.getStats({ workspaceId }));
  const wrongKey = createClient(SarahService, transport("not-a-key"));
  const unknownKey = await refusal(() => wrongKey.getStats({ workspaceId }));
  const otherWorkspace = await refusal(() => sarah.getStats({ workspaceId: "elsewhere" }));
  // A stream refused before its first message is an error of the iteration itself.
  const refusedWatch = await refusal(async () => {
    for await (const _ of keyless.watchLeads({ workspaceId })) break;
  });
  return {
    fields,
    message: invalid.rawMessage,
    codes: Object.fromEntries(Object.entries({ unauthenticated, unknownKey, otherWorkspace,
                                               refusedWatch })
      .map(([name, error]) => [name, Code[error.code]])),
  };
}

const scenarios: Record<string, () => Promise<object>> = { unary, watch: watchScenario, errors };
const scenario = scenarios[process.argv[2]];
assert.ok(scenario, `usage: node grpc_web.ts ${Object.keys(scenarios).join("|")}`);
console.log(JSON.stringify(await scenario()));
