/**
 * Every command's `--json` output, as a script reads it: one document that
 * parses, with the keys and types docs/cli.md lists (and no others), in
 * camelCase; node answers in the canonical proto3 JSON mapping. Real
 * `blixard` processes and a real node on loopback.
 */

import { assert, assertEquals, assertThrows } from "../assert.ts";
import { assertDocumented, jsonDoc } from "./json_doc.ts";
import {
  blixardJson as json,
  freeTcpPort,
  loopbackSections,
  operatorDir,
  startNode,
} from "./helpers.ts";

Deno.test("the docs check catches an undocumented key, a missing one and a wrong type", async () => {
  const doc = await jsonDoc("version");
  const good = { agent: "0.1.0", deno: "2.9.6", protocol: 1 };
  assertDocumented("version", doc, good);
  assertThrows(() => assertDocumented("version", doc, { ...good, extra: 1 }), /extra: not in/);
  assertThrows(() => assertDocumented("version", doc, { agent: "0.1.0", protocol: 1 }), /missing/);
  assertThrows(() => assertDocumented("version", doc, { ...good, protocol: "1" }), /protocol/);
});

Deno.test("version and key print the documented JSON, keys in camelCase", async () => {
  const version = await json("version", ["version", "--json"]);
  assertEquals(version.protocol, 1);
  const { dir, opKey, operatorId } = await operatorDir();
  try {
    const shown = await json("key", ["key", "show", "--file", opKey, "--json"]);
    assertEquals(shown, { file: opKey, endpointId: operatorId, ticket: null });
    const other = `${dir}/other_key`;
    const made = await json("key", [
      "key",
      "generate",
      "--file",
      other,
      "--addr",
      "127.0.0.1:7401",
      "--json",
    ]);
    assert(String(made.ticket).startsWith("endpoint"), String(made.ticket));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config check prints the documented JSON for a valid file, an invalid one and a missing TLS file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blixard-json-" });
  try {
    const file = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      file,
      `[node]\nid = 1\ndata_dir = "${dir}/data"\n[transport.migration]\nprefer_iroh = ["health"]\n`,
    );
    const ok = await json("config check", ["config", "check", file, "--json"]);
    assertEquals(ok.ok, true);
    assertEquals((ok.warnings as { code: string }[]).map((w) => w.code), ["implied_mode"]);
    const config = ok.config as {
      transport: { mode: string; migration: { preferIroh: string[] } };
    };
    assertEquals(config.transport.mode, "dual");
    assertEquals(config.transport.migration.preferIroh, ["health"]);

    await Deno.writeTextFile(file, `[node]\nid = 1\n[transport]\nmode = "dual\n`);
    const syntax = await json("config check", ["config", "check", file, "--json"], 1);
    assertEquals(syntax.config, null);
    const [error] = syntax.errors as { code: string; line: number; column: number }[];
    assertEquals([error!.code, error!.line], ["toml_syntax", 4]);

    await Deno.writeTextFile(
      file,
      `[node]\nid = 1\ndata_dir = "${dir}/data"\n[grpc.tls]\ncert_file = "${dir}/n.crt"\nkey_file = "${dir}/n.key"\n`,
    );
    const missing = await json("config check", ["config", "check", file, "--json"], 1);
    assertEquals(
      (missing.errors as { path: string; code: string }[]).map((e) => [e.path, e.code]),
      [["grpc.tls.cert_file", "unreadable_file"], ["grpc.tls.key_file", "unreadable_file"]],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "health and status print the documented proto3 JSON, over gRPC and over Iroh",
  async fn() {
    const { dir, opKey, operatorId } = await operatorDir();
    const grpcPort = freeTcpPort();
    const config = `${dir}/node.toml`;
    await Deno.writeTextFile(
      config,
      `[node]\nid = 1\ndata_dir = "${dir}/data"\n[transport]\nmode = "dual"\n` +
        `[transport.migration]\nprefer_iroh = ["health"]\n` +
        loopbackSections(grpcPort, operatorId) +
        `[[cluster.peers]]\nid = 2\nendpoint_id = "${"ab".repeat(32)}"\n` +
        `grpc_address = "127.0.0.1:${freeTcpPort()}"\n`,
    );
    const node = await startNode(config);
    try {
      const viaIroh = ["--ticket", node.ticket, "--key", opKey, "--json"];
      const viaGrpc = ["--addr", `127.0.0.1:${grpcPort}`, "--json"];
      for (const via of [viaIroh, viaGrpc]) {
        // Without a leader the node answers NOT_SERVING, and health exits 1.
        const health = await json("health", ["health", ...via], 1);
        assertEquals(health.status, "SERVING_STATUS_NOT_SERVING");
        assertEquals(health.nodeId, "1");
        // Its only peer never starts: no quorum, no leader.
        assertEquals(
          health.detail,
          "no leader known: an election is under way, or no quorum is reachable",
        );

        const status = await json("status", ["status", ...via]);
        const { cluster, raft } = status as {
          cluster: {
            leaderId: string;
            members: {
              nodeId: string;
              iroh?: { endpointId: string };
              services: { service: string; transports: string[]; preferred: string }[];
            }[];
          };
          raft: { role: string; term: string };
        };
        assertEquals(cluster.leaderId, "0");
        // Its only peer never starts: it campaigns, and no one answers.
        assert(
          ["RAFT_ROLE_FOLLOWER", "RAFT_ROLE_PRE_CANDIDATE", "RAFT_ROLE_CANDIDATE"].includes(
            raft.role,
          ),
          raft.role,
        );
        assert(/^\d+$/.test(raft.term), raft.term);
        assertEquals(cluster.members.map((m) => m.nodeId), ["1", "2"]);
        assertEquals(cluster.members[0]!.iroh?.endpointId, node.endpointId);
        assertEquals(cluster.members[0]!.services[0], {
          service: "SERVICE_ID_HEALTH",
          transports: ["TRANSPORT_GRPC", "TRANSPORT_IROH"],
          preferred: "TRANSPORT_IROH",
        });
      }
    } finally {
      await node.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
