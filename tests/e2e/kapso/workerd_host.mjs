// Runs the Kapso functions of kapso/functions/ in workerd (through miniflare), wrapped as
// Kapso wraps them: the file's text, then a module whose fetch calls handler(request, env).
// One long-lived process for tests/support/workerd.py; it listens on 127.0.0.1:<argv[2]>:
//   POST /run   {"function": "sarah_save_state", "env": {...}, "body": {...}}
//               -> {"status": 200, "body": <the function's JSON answer>, "ms": 12.3}
//   POST /check {"function": "sarah_save_state", "body": {...}}
//               -> the file compiled as a plain script in Node (no workerd), and what its
//                  handler answers there with an empty env.
// One Miniflare (one workerd) per distinct env, both functions in it, the few most recent
// kept; each starts in about 0.1 s. Its worker's outbound fetch goes through miniflare's
// "internet" network service, which allows ["public", "private", "240.0.0.0/4"], and
// workerd's "private" includes "local" (127.0.0.0/8): the functions reach the loopback
// Envoy of the tests with no outboundService.

import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import vm from "node:vm";

const KAPSO = new URL("../../../kapso/", import.meta.url);
const { Miniflare } = createRequire(new URL("package.json", KAPSO))("miniflare");
const FUNCTIONS = new URL("functions/", KAPSO);
const KEPT = 8;
// Kapso does not say which compatibility date its workers use: a recent one.
const COMPATIBILITY_DATE = "2026-07-01";
const WRAPPER = "\nexport default { fetch(request, env) { return handler(request, env); } };\n";

const runtimes = new Map(); // JSON of an env -> Promise of its Miniflare, oldest first

function source(name) {
  if (!/^[a-z_]+$/.test(name)) throw new Error(`no such function: ${name}`);
  return readFileSync(new URL(`${name}.js`, FUNCTIONS), "utf8");
}

async function runtime(env) {
  const key = JSON.stringify(Object.entries(env).sort());
  let started = runtimes.get(key);
  if (started === undefined) {
    const workers = readdirSync(FUNCTIONS).filter((file) => file.endsWith(".js")).map((file) => {
      const name = file.slice(0, -3);
      return {
        name, modules: true, script: source(name) + WRAPPER, bindings: env,
        compatibilityDate: COMPATIBILITY_DATE,
      };
    });
    const mf = new Miniflare({ workers });
    started = mf.ready.then(() => mf);
    runtimes.set(key, started);
    while (runtimes.size > KEPT) {
      const [oldest, old] = runtimes.entries().next().value;
      runtimes.delete(oldest);
      old.then((instance) => instance.dispose()).catch(() => {});
    }
  }
  return started;
}

async function run({ function: name, env, body }) {
  const mf = await runtime(env ?? {});
  const worker = await mf.getWorker(name);
  const began = performance.now();
  const reply = await worker.fetch("https://kapso.invalid/function", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const text = await reply.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: reply.status, body: parsed, ms: performance.now() - began };
}

async function check({ function: name, body }) {
  const text = source(name);
  new vm.Script(text, { filename: `${name}.js` }); // throws on import, export, top-level await
  const handler = new Function(`${text}\nreturn handler;`)();
  const reply = await handler(new Request("https://kapso.invalid/function", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  }), {});
  return {
    handler: handler.toString().split("{", 1)[0].trim(),
    status: reply.status,
    body: await reply.json(),
  };
}

const ROUTES = { "/run": run, "/check": check };

const server = http.createServer(async (request, response) => {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  let status = 200;
  let answer;
  try {
    const route = ROUTES[request.url];
    if (!route) throw new Error(`no route ${request.url}`);
    answer = await route(JSON.parse(Buffer.concat(chunks).toString()));
  } catch (error) {
    status = 500;
    answer = { error: String(error?.stack ?? error) };
  }
  response.writeHead(status, { "content-type": "application/json" });
  response.end(JSON.stringify(answer));
});

async function stop() {
  setTimeout(() => process.exit(1), 5000).unref(); // a dispose that hangs
  server.close();
  await Promise.allSettled([...runtimes.values()].map((started) => started.then((mf) => mf.dispose())));
  process.exit(0);
}

process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// Orphaned (its test process killed): stop too, rather than keep workerd processes running.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) stop(); }, 1000).unref();
server.listen(Number(process.argv[2]), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
