// Runs the README's Kapso Function nodes as Kapso would: each called with
// { trigger, nodes, env }. The README's snippets are prepended to this file by
// tests/e2e/test_kapso_node.py; the case comes as JSON on argv[2], and what each
// node returned (or the error it threw) goes to stdout as one JSON line.

const NODES = { load_state, save_state };

async function run_case(kase) {
  const context = { trigger: kase.trigger, nodes: kase.nodes, env: kase.env };
  const out = {};
  for (const step of kase.steps) {
    try {
      out[step.as] = await NODES[step.node](context);
    } catch (error) {
      out[step.as] = { thrown: String(error.message) };
    }
  }
  return out;
}

run_case(JSON.parse(process.argv[2])).then(
  (out) => { process.stdout.write(JSON.stringify(out) + "\n"); },
  (error) => { process.stderr.write(String(error.stack) + "\n"); process.exit(1); },
);
