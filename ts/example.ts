// A typed SarahService client in TypeScript: Connect-ES's gRPC-Web transport to Envoy, the
// API key sent as metadata, a read, a write, and that write arriving on a watch.
//
//   SARAH_URL=http://127.0.0.1:8080 SARAH_API_KEY=... node ts/example.ts
//
// Node 24 runs this file as it is (it strips the types). In a browser the same code runs
// from any bundler, on a page whose origin SARAH_CORS_ORIGINS allows (docs/operations.md).
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventKind, SarahService, State, Temperature } from "./gen/sarah/v1/sarah_pb.js";

const apiKey = process.env.SARAH_API_KEY;
// Every call carries the key, as gRPC metadata: an HTTP header of the gRPC-Web request.
const withApiKey: Interceptor = (next) => (request) => {
  if (apiKey) request.header.set("x-api-key", apiKey);
  return next(request);
};
const transport = createGrpcWebTransport({
  baseUrl: process.env.SARAH_URL ?? "http://127.0.0.1:8080",  // Envoy, not the gRPC port
  interceptors: [withApiKey],
});
const sarah = createClient(SarahService, transport);

const workspaceId = process.env.SARAH_WORKSPACE_ID ?? "";
const contactPhone = "+6281234567890";

const before = await sarah.getState({ contactPhone, workspaceId });
console.log(`before: state=${State[before.state]} score=${before.leadScore} messages=${before.messageCount}`);

// List (here: the statistics), then watch from their revision: nothing is missed between.
const { revision } = await sarah.getStats({ workspaceId });

const after = await sarah.upsertState({
  contactPhone,
  workspaceId,
  state: State.qualifying,
  leadScore: 45,
  leadTemperature: Temperature.warm,
  extractedData: { name: "Budi", businessType: "restaurant" },
  addMessages: 1,
  requestId: `wamid.${crypto.randomUUID()}`,  // a bot sends the WhatsApp message id
});
console.log(`after: state=${State[after.state]} score=${after.leadScore} messages=${after.messageCount}`);

for await (const event of sarah.watchLeads({ workspaceId, sinceRevision: revision })) {
  if (event.kind === EventKind.heartbeat) continue;
  console.log(`event: revision=${event.revision} ${EventKind[event.kind]} ` +
    `${event.conversation?.contactPhone} changed=${event.changed.join(",")}`);
  break;  // leaving the loop cancels the stream
}
