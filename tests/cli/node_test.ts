/**
 * The command line end to end, as an operator uses it: real `blixard`
 * processes (run from source), a real config file, real key files, real
 * signals.
 */

import { assert, assertEquals } from "../assert.ts";
import { blixard as run, freeTcpPort, operatorDir, startNode } from "./helpers.ts";

const blixard = (...args: string[]) => run(args);

async function setup() {
  const { dir, opKey, operatorId } = await operatorDir();
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

[metrics]
bind = "127.0.0.1:0"

[cluster]
operator_keys = ["${operatorId}"]
`,
  );
  return { dir, opKey, operatorId, config };
}

/** The services a node implements today: Status lists only these. */
const IMPLEMENTED = ["health", "status", "vm", "monitoring", "cluster", "metadata"];

Deno.test({
  name: "an operator starts a node, asks its health and status, and stops it with SIGTERM",
  async fn() {
    const { dir, opKey, config } = await setup();
    const node = await startNode(config);
    try {
      // A single node is its cluster's only voter: it leads at once and serves.
      const health = await blixard("health", "--ticket", node.ticket, "--key", opKey, "--json");
      assertEquals(health.code, 0, health.stderr);
      const h = JSON.parse(health.stdout);
      assertEquals(h.status, "SERVING_STATUS_SERVING");
      assertEquals(h.nodeId, "1");

      const human = await blixard("health", "--ticket", node.ticket, "--key", opKey);
      assertEquals(human.code, 0, human.stderr);
      assert(/node 1 \(endpoint [0-9a-f]{12}…\): SERVING/.test(human.stdout), human.stdout);

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
      const strangerId = /operator_keys:\n {2}([0-9a-f]{64})\n/.exec(stranger.stderr)?.[1];
      assert(strangerId, stranger.stderr);
      // The caller is an operator, not a node: the refusal says "caller", and how to let it in.
      assert(!stranger.stderr.includes("refused this node"), stranger.stderr);
      assert(
        stranger.stderr.includes(
          `refused this caller: endpoint ${strangerId.slice(0, 10)}… is not on its allowlist`,
        ),
        stranger.stderr,
      );
      assert(
        stranger.stderr.includes(
          `add this operator's endpoint id to the node's [cluster] operator_keys: ${strangerId}`,
        ),
        stranger.stderr,
      );
    } finally {
      node.child.kill("SIGTERM");
      await node.child.status;
    }
  },
});

Deno.test({
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
  name: "a gRPC port another process holds stops the node at start with one line naming the key",
  async fn() {
    const { dir, config } = await setup();
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (holder.addr as Deno.NetAddr).port;
    try {
      await Deno.writeTextFile(
        config,
        (await Deno.readTextFile(config)).replace('mode = "iroh"', 'mode = "grpc"') +
          `\n[grpc]\nbind = "127.0.0.1:${port}"\n`,
      );
      const r = await blixard("node", "--config", config);
      assertEquals(r.code, 1, r.stderr);
      assertEquals(
        r.stderr.trimEnd().split("\n").at(-1),
        `blixard: grpc.bind = "127.0.0.1:${port}": cannot listen: the address is in use ` +
          `(another process, or another node on this host, holds the port); choose another port`,
      );
      assert(!r.stderr.includes("unexpected error"), r.stderr);
      assertEquals(r.stdout, "");
    } finally {
      holder.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
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
  name: "key show prints the endpoint id and, given addresses, a ticket",
  async fn() {
    const { opKey, operatorId } = await setup();
    const r = await blixard("key", "show", "--file", opKey, "--addr", "127.0.0.1:7401", "--json");
    assertEquals(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assertEquals(info.endpointId, operatorId);
    assert(info.ticket.startsWith("endpoint"), info.ticket);
    const again = await blixard("key", "generate", "--file", opKey);
    assertEquals(again.code, 1);
    assert(again.stderr.includes("refusing to replace it"), again.stderr);
  },
});

Deno.test({
  name:
    "an operator moves a running node from grpc to dual with 'blixard reload', and a bad file changes nothing",
  async fn() {
    const { dir, operatorId } = await setup();
    const grpcPort = freeTcpPort();
    const config = `${dir}/flip.toml`;
    const write = (mode: string, extra = "") =>
      Deno.writeTextFile(
        config,
        `[node]\nid = 1\ndata_dir = "${dir}/data"\n[transport]\nmode = "${mode}"\n${extra}` +
          `[grpc]\nbind = "127.0.0.1:${grpcPort}"\n[iroh]\nbind = "127.0.0.1:0"\nrelay = "disabled"\n` +
          `[metrics]\nbind = "127.0.0.1:0"\n` +
          `[cluster]\noperator_keys = ["${operatorId}"]\n`,
      );
    const served = async () => {
      const r = await blixard("status", "--addr", `127.0.0.1:${grpcPort}`, "--json");
      assertEquals(r.code, 0, r.stderr);
      const self = JSON.parse(r.stdout).cluster.members[0];
      return self.services.map((s: { service: string; transports: string[] }) =>
        `${s.service.replace("SERVICE_ID_", "").toLowerCase()}:${
          s.transports.map((t) => t.replace("TRANSPORT_", "").toLowerCase())
        }`
      );
    };
    await write("grpc");
    let node = await startNode(config, /serving \(mode grpc\)\n {2}grpc: \S+\n/);
    try {
      const h = await blixard("health", "--addr", `127.0.0.1:${grpcPort}`);
      assertEquals(h.code, 0, h.stderr);
      assert(h.stdout.includes(`node 1 (grpc 127.0.0.1:${grpcPort}): SERVING`), h.stdout);
      assertEquals(await served(), IMPLEMENTED.map((s) => `${s}:grpc`));

      await write("dual", `[transport.migration]\nprefer_iroh = ["health", "status"]\n`);
      const ok = await blixard("reload", "--config", config);
      assertEquals(ok.code, 0, ok.stderr);
      assert(ok.stdout.includes("iroh listener started"), ok.stdout);
      assertEquals(await served(), IMPLEMENTED.map((s) => `${s}:grpc,iroh`));

      await Deno.writeTextFile(config, `[node]\nid = 1\n[transport]\nmode = "quic"\n`);
      const bad = await blixard("reload", "--config", config);
      assertEquals(bad.code, 1);
      assert(bad.stderr.includes("transport.mode"), bad.stderr);
      assertEquals(await served(), IMPLEMENTED.map((s) => `${s}:grpc,iroh`));

      // A restart with the file that was last applied gives the same state.
      await write("dual", `[transport.migration]\nprefer_iroh = ["health", "status"]\n`);
      node.child.kill("SIGTERM");
      await node.child.status;
      node = await startNode(config, /serving \(mode dual\)/);
      assertEquals(await served(), IMPLEMENTED.map((s) => `${s}:grpc,iroh`));
    } finally {
      node.child.kill("SIGTERM");
      await node.child.status;
    }
  },
});

Deno.test({
  name: "a node whose TLS certificate file is missing does not start, and names the key",
  async fn() {
    const { dir, operatorId } = await setup();
    const config = `${dir}/tls.toml`;
    await Deno.writeTextFile(`${dir}/node.key`, "not a key, but readable");
    await Deno.writeTextFile(
      config,
      `[node]\nid = 1\ndata_dir = "${dir}/data"\n[grpc]\nbind = "127.0.0.1:${freeTcpPort()}"\n` +
        `[grpc.tls]\ncert_file = "${dir}/node.crt"\nkey_file = "${dir}/node.key"\n` +
        `[cluster]\noperator_keys = ["${operatorId}"]\n`,
    );
    const r = await blixard("node", "--config", config);
    assertEquals(r.code, 1, r.stderr);
    assertEquals(
      r.stderr,
      `blixard: ${config}: grpc.tls.cert_file = "${dir}/node.crt": cannot read it: no such file\n`,
    );
    const check = await blixard("config", "check", config);
    assertEquals(check.code, 1);
    assert(check.stderr.includes(`grpc.tls.cert_file = "${dir}/node.crt": cannot read it`));
  },
});
