/**
 * The command line end to end, as an operator uses it: real `blixard`
 * processes (run from source), a real config file, real key files, real
 * signals.
 */

import { assert, assertEquals } from "../assert.ts";

const root = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

async function blixard(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "src/cli/main.ts", ...args],
    cwd: root,
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

interface RunningNode {
  child: Deno.ChildProcess;
  ticket: string;
  endpointId: string;
  stderr: () => string;
}

/** Starts `blixard node --config FILE` and waits until its output matches `ready`. */
async function startNode(config: string, ready = /ticket: \S+\n/): Promise<RunningNode> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "src/cli/main.ts", "node", "--config", config],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let err = "";
  (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) err += chunk;
  })();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const deadline = Date.now() + 20_000;
  while (!ready.test(out)) {
    if (Date.now() > deadline) throw new Error(`node did not start: ${out}\n${err}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`node exited before serving: ${out}\n${err}`);
    out += value;
  }
  reader.cancel().catch(() => {});
  return {
    child,
    ticket: /ticket: (\S+)/.exec(out)?.[1] ?? "",
    endpointId: /endpoint id: (\S+)/.exec(out)?.[1] ?? "",
    stderr: () => err,
  };
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "blixard-cli-" });
  const opKey = `${dir}/operator_key`;
  const gen = await blixard("key", "generate", "--file", opKey, "--json");
  assertEquals(gen.code, 0, gen.stderr);
  const operatorId = JSON.parse(gen.stdout).endpoint_id as string;
  const config = `${dir}/node.toml`;
  await Deno.writeTextFile(
    config,
    `[node]
id = 1
data_dir = "${dir}/data"

[transport]
mode = "iroh"

[iroh]
bind = "127.0.0.1:0"
relay = "disabled"

[cluster]
operator_keys = ["${operatorId}"]
`,
  );
  return { dir, opKey, operatorId, config };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...opts,
  name: "an operator starts a node, asks its health and status, and stops it with SIGTERM",
  async fn() {
    const { dir, opKey, config } = await setup();
    const node = await startNode(config);
    try {
      // It answers, and says it is not serving (exit 1) while it knows no leader.
      const health = await blixard("health", "--ticket", node.ticket, "--key", opKey, "--json");
      assertEquals(health.code, 1, health.stderr);
      const h = JSON.parse(health.stdout);
      assertEquals(h.status, "NOT_SERVING");
      assertEquals(h.nodeId, "1");

      const human = await blixard("health", "--ticket", node.ticket, "--key", opKey);
      assertEquals(human.code, 1, human.stderr);
      assert(/node 1 \(endpoint [0-9a-f]{12}…\): NOT_SERVING/.test(human.stdout), human.stdout);

      const status = await blixard("status", "--ticket", node.ticket, "--key", opKey, "--json");
      assertEquals(status.code, 0, status.stderr);
      const s = JSON.parse(status.stdout);
      assertEquals(s.cluster.members.length, 1);
      assertEquals(s.cluster.members[0].iroh.endpointId, node.endpointId);
      assertEquals(s.raft.nodeId, "1");

      const keyInfo = await Deno.stat(`${dir}/data/iroh_secret_key`);
      assertEquals(keyInfo.mode! & 0o777, 0o600);
    } finally {
      node.child.kill("SIGTERM");
    }
    const status = await node.child.status;
    assertEquals(status.code, 0, node.stderr());
    assert(node.stderr().includes("SIGTERM: stopping"), node.stderr());
  },
});

Deno.test({
  ...opts,
  name: "a restarted node keeps its endpoint id, and an unknown operator is refused with a hint",
  async fn() {
    const { dir, config } = await setup();
    let node = await startNode(config);
    const firstId = node.endpointId;
    node.child.kill("SIGTERM");
    await node.child.status;
    node = await startNode(config);
    try {
      assertEquals(node.endpointId, firstId);
      const stranger = await blixard(
        "health",
        "--ticket",
        node.ticket,
        "--key",
        `${dir}/stranger_key`,
        "--timeout",
        "3000",
      );
      assertEquals(stranger.code, 1);
      assert(stranger.stderr.includes("created operator key"), stranger.stderr);
      assert(stranger.stderr.includes("operator_keys"), stranger.stderr);
    } finally {
      node.child.kill("SIGTERM");
      await node.child.status;
    }
  },
});

Deno.test({
  ...opts,
  name: "a node refuses to start with a key file others can read, and says how to fix it",
  async fn() {
    const { dir, config } = await setup();
    await Deno.mkdir(`${dir}/data`, { recursive: true });
    await Deno.writeTextFile(`${dir}/data/iroh_secret_key`, "11".repeat(32) + "\n", {
      mode: 0o644,
    });
    await Deno.chmod(`${dir}/data/iroh_secret_key`, 0o644);
    const r = await blixard("node", "--config", config);
    assertEquals(r.code, 1);
    assert(r.stderr.includes(`${dir}/data/iroh_secret_key`), r.stderr);
    assert(r.stderr.includes("chmod"), r.stderr);
  },
});

Deno.test({
  ...opts,
  name: "config check prints the effective config, or every error with exit status 1",
  async fn() {
    const { dir, config } = await setup();
    const ok = await blixard("config", "check", config);
    assertEquals(ok.code, 0, ok.stderr);
    assert(ok.stdout.includes("max_frame_bytes"), ok.stdout);
    const bad = `${dir}/bad.toml`;
    await Deno.writeTextFile(
      bad,
      `[node]\nid = 1\n\n[transport]\nmode = "quic"\n\n[iroh]\nrelays = "disabled"\n`,
    );
    const r = await blixard("config", "check", bad);
    assertEquals(r.code, 1);
    assert(r.stderr.includes("transport.mode"), r.stderr);
    assert(r.stderr.includes('did you mean "relay"'), r.stderr);
  },
});

Deno.test({
  ...opts,
  name: "key show prints the endpoint id and, given addresses, a ticket",
  async fn() {
    const { opKey, operatorId } = await setup();
    const r = await blixard("key", "show", "--file", opKey, "--addr", "127.0.0.1:7401", "--json");
    assertEquals(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assertEquals(info.endpoint_id, operatorId);
    assert(info.ticket.startsWith("endpoint"), info.ticket);
    const again = await blixard("key", "generate", "--file", opKey);
    assertEquals(again.code, 1);
    assert(again.stderr.includes("refusing to replace it"), again.stderr);
  },
});

Deno.test({
  ...opts,
  name:
    "an operator moves a running node from grpc to dual with 'blixard reload', and a bad file changes nothing",
  async fn() {
    const { dir, operatorId } = await setup();
    const grpcPort = await freeTcpPort();
    const config = `${dir}/flip.toml`;
    const write = (mode: string, extra = "") =>
      Deno.writeTextFile(
        config,
        `[node]\nid = 1\ndata_dir = "${dir}/data"\n[transport]\nmode = "${mode}"\n${extra}` +
          `[grpc]\nbind = "127.0.0.1:${grpcPort}"\n[iroh]\nbind = "127.0.0.1:0"\nrelay = "disabled"\n` +
          `[cluster]\noperator_keys = ["${operatorId}"]\n`,
      );
    const served = async () => {
      const r = await blixard("status", "--addr", `127.0.0.1:${grpcPort}`, "--json");
      assertEquals(r.code, 0, r.stderr);
      const self = JSON.parse(r.stdout).cluster.members[0];
      return self.services.map((s: { service: string; transports: string[] }) =>
        `${s.service}:${s.transports}`
      );
    };
    await write("grpc");
    let node = await startNode(config, /serving \(mode grpc\)\n {2}grpc: \S+\n/);
    try {
      const h = await blixard("health", "--addr", `127.0.0.1:${grpcPort}`);
      assert(h.stdout.includes(`node 1 (grpc 127.0.0.1:${grpcPort}): NOT_SERVING`), h.stdout);
      assertEquals(await served(), ["1:1", "2:1"]);

      await write("dual", `[transport.migration]\nprefer_iroh = ["health", "status"]\n`);
      const ok = await blixard("reload", "--config", config);
      assertEquals(ok.code, 0, ok.stderr);
      assert(ok.stdout.includes("iroh listener started"), ok.stdout);
      assertEquals(await served(), ["1:1,2", "2:1,2"]);

      await Deno.writeTextFile(config, `[node]\nid = 1\n[transport]\nmode = "quic"\n`);
      const bad = await blixard("reload", "--config", config);
      assertEquals(bad.code, 1);
      assert(bad.stderr.includes("transport.mode"), bad.stderr);
      assertEquals(await served(), ["1:1,2", "2:1,2"]);

      // A restart with the file that was last applied gives the same state.
      await write("dual", `[transport.migration]\nprefer_iroh = ["health", "status"]\n`);
      node.child.kill("SIGTERM");
      await node.child.status;
      node = await startNode(config, /serving \(mode dual\)/);
      assertEquals(await served(), ["1:1,2", "2:1,2"]);
    } finally {
      node.child.kill("SIGTERM");
      await node.child.status;
    }
  },
});

async function freeTcpPort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return await Promise.resolve(port);
}
