/**
 * Each kind of mistake an operator can make in the file, and the message
 * that tells them what to write instead. Tests match on codes and paths; the
 * messages the design brief quotes are checked word for word.
 */

import { assert, assertEquals } from "../assert.ts";
import { parseConfig } from "../../src/config/mod.ts";
import { errorAt, invalid, valid, withNode } from "./helpers.ts";

Deno.test("a value of the wrong type names the key, the value and both types", () => {
  const e = errorAt(invalid('[node]\nid = "one"\n'), "node.id");
  assertEquals(e.code, "wrong_type");
  assertEquals(
    e.message,
    'config: node.id = "one": expected an integer from 1 to 9007199254740991, got a string',
  );
  const f = errorAt(
    invalid(withNode("[limits]\nmax_concurrent_streams = 1.5\n")),
    "limits.max_concurrent_streams",
  );
  assertEquals(f.code, "wrong_type");
  assert(f.message.endsWith("got a float"), f.message);
  const g = errorAt(invalid(withNode('[grpc]\nallow_insecure = "yes"\n')), "grpc.allow_insecure");
  assertEquals(
    g.message,
    'config: grpc.allow_insecure = "yes": expected true or false, got a string',
  );
});

Deno.test("a value outside an enumeration lists the allowed values", () => {
  const e = errorAt(
    invalid(
      withNode('[transport]\nmode = "dual"\n[transport.migration]\nraft_transport = "quic"\n'),
    ),
    "transport.migration.raft_transport",
  );
  assertEquals(e.code, "invalid_value");
  assertEquals(
    e.message,
    'config: transport.migration.raft_transport = "quic": expected "grpc", "iroh" or "adaptive"',
  );
});

Deno.test("a near miss in an enumeration gets a suggestion", () => {
  const e = errorAt(invalid(withNode('[transport]\nmode = "duel"\n')), "transport.mode");
  assertEquals(
    e.message,
    'config: transport.mode = "duel": expected "grpc", "iroh" or "dual"; did you mean "dual"?',
  );
});

Deno.test("a number out of range names its minimum and maximum", () => {
  const e = errorAt(
    invalid(withNode("[limits]\nmax_frame_bytes = 512\n")),
    "limits.max_frame_bytes",
  );
  assertEquals(e.code, "out_of_range");
  assertEquals(
    e.message,
    "config: limits.max_frame_bytes = 512: expected an integer from 1024 to 1073741824 (1 KiB to 1 GiB)",
  );
  const zero = errorAt(
    invalid(withNode("[limits]\nrequest_deadline_ms = 0\n")),
    "limits.request_deadline_ms",
  );
  assertEquals(zero.code, "out_of_range");
  assert(zero.message.includes("from 1 to 3600000"), zero.message);
});

Deno.test("every limit has a minimum and a maximum, and says so", () => {
  for (
    const key of [
      "max_frame_bytes",
      "max_inflight_requests",
      "max_concurrent_streams",
      "request_deadline_ms",
      "max_request_deadline_ms",
      "shutdown_timeout_ms",
    ]
  ) {
    for (const value of [0, 2 ** 40]) {
      const issues = invalid(withNode(`[limits]\n${key} = ${value}\n`));
      const e = errorAt(issues, `limits.${key}`);
      assertEquals(e.code, "out_of_range", e.message);
      assert(/expected an integer from \d+ to \d+/.test(e.message), e.message);
    }
  }
});

Deno.test("an unknown key suggests the key it is close to", () => {
  const e = errorAt(invalid(withNode('[iroh]\nrelays = "default"\n')), "iroh.relays");
  assertEquals(e.code, "unknown_key");
  assertEquals(e.message, 'config: iroh.relays: unknown key; did you mean "relay"?');
  assertEquals(
    errorAt(invalid(withNode('dataDir = "/x"\n')), "node.dataDir").message,
    'config: node.dataDir: unknown key; did you mean "data_dir"?',
  );
  assertEquals(
    errorAt(invalid(withNode('[grcp]\nbind = "127.0.0.1:1"\n')), "grcp").message,
    'config: grcp: unknown key; did you mean "grpc"?',
  );
});

Deno.test("a key in the wrong table points at the right one", () => {
  const e = errorAt(
    invalid(withNode('[transport]\nmode = "dual"\nprefer_iroh = ["health"]\n')),
    "transport.prefer_iroh",
  );
  assertEquals(
    e.message,
    "config: transport.prefer_iroh: unknown key; did you mean transport.migration.prefer_iroh (under [transport.migration])?",
  );
  assertEquals(
    errorAt(invalid(withNode("[migration]\n")), "migration").message,
    "config: migration: unknown key; did you mean [transport.migration]?",
  );
});

Deno.test("an unknown key with no near match lists the keys allowed there", () => {
  const e = errorAt(invalid(withNode('name = "a"\n')), "node.name");
  assertEquals(e.message, 'config: node.name: unknown key; allowed keys here: "id", "data_dir"');
});

Deno.test("a missing required key says what belongs there", () => {
  for (const text of ["", "[node]\n", '[node]\ndata_dir = "/x"\n']) {
    const e = errorAt(invalid(text), "node.id");
    assertEquals(e.code, "missing_key");
    assertEquals(
      e.message,
      "config: node.id: missing; expected an integer from 1 to 9007199254740991",
    );
  }
  const peer = errorAt(
    invalid(withNode('[[cluster.peers]]\nticket = "endpointaa"\n')),
    "cluster.peers[0].id",
  );
  assertEquals(peer.code, "missing_key");
});

Deno.test("a malformed endpoint id is refused, and uppercase gets its own hint", () => {
  const short = errorAt(
    invalid(withNode('[[cluster.peers]]\nid = 2\nendpoint_id = "abc123"\n')),
    "cluster.peers[0].endpoint_id",
  );
  assertEquals(short.code, "invalid_value");
  assert(short.message.includes("expected 64 lowercase hex characters"), short.message);
  const upper = errorAt(
    invalid(withNode(`[cluster]\noperator_keys = ["${"AB".repeat(32)}"]\n`)),
    "cluster.operator_keys[0]",
  );
  assert(upper.message.endsWith("write it in lowercase"), upper.message);
});

Deno.test("relay URLs must be http or https, and the list must not be empty", () => {
  const issues = invalid(withNode('[iroh]\nrelay = ["ftp://relay.example.com", "relay", 7]\n'));
  assertEquals(
    errorAt(issues, "iroh.relay[0]").message,
    'config: iroh.relay[0] = "ftp://relay.example.com": expected an http:// or https:// URL',
  );
  assertEquals(errorAt(issues, "iroh.relay[1]").code, "invalid_value");
  assertEquals(errorAt(issues, "iroh.relay[2]").code, "wrong_type");
  for (const value of ["[]", '"none"']) {
    const e = errorAt(invalid(withNode(`[iroh]\nrelay = ${value}\n`)), "iroh.relay");
    assertEquals(e.code, "invalid_value");
    assert(
      e.message.endsWith(
        'expected "default", "disabled", or a non-empty list of http:// or https:// relay URLs',
      ),
      e.message,
    );
  }
  const ok = parseConfig(
    withNode('[iroh]\nrelay = ["https://relay.example.com", "http://10.0.0.9:3340"]\n'),
  );
  assert(ok.ok);
  assertEquals(ok.config.iroh.relay, ["https://relay.example.com", "http://10.0.0.9:3340"]);
});

Deno.test("addresses must be host:port; Iroh's must be IP literals; dialled ports are not 0", () => {
  const issues = invalid(withNode(`
[grpc]
bind = "7400"
[iroh]
bind = "localhost:7401"
[[cluster.peers]]
id = 2
ticket = "endpointaa"
addresses = ["10.0.0.2:0", "10.0.0.256:7401"]
grpc_address = "node-2.example.com:7400"
`));
  assertEquals(
    errorAt(issues, "grpc.bind").message,
    'config: grpc.bind = "7400": expected "host:port" with port 0-65535 (IPv6 in brackets), e.g. "0.0.0.0:7400"',
  );
  assertEquals(errorAt(issues, "iroh.bind").code, "invalid_value");
  assertEquals(errorAt(issues, "cluster.peers[0].addresses[0]").code, "invalid_value");
  assertEquals(errorAt(issues, "cluster.peers[0].addresses[1]").code, "invalid_value");
  assertEquals(issues.filter((i) => i.path.includes("grpc_address")), []);
});

Deno.test("prefer_iroh refuses raft, pointing at raft_transport", () => {
  const e = errorAt(
    invalid(
      withNode(
        '[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["health", "raft"]\n',
      ),
    ),
    "transport.migration.prefer_iroh[1]",
  );
  assertEquals(e.code, "invalid_value");
  assert(
    e.message.includes('set transport.migration.raft_transport = "iroh" or "adaptive"'),
    e.message,
  );
});

Deno.test("all_except_raft stands alone", () => {
  const e = errorAt(
    invalid(
      withNode(
        '[transport]\nmode = "dual"\n[transport.migration]\nprefer_iroh = ["all_except_raft", "vm"]\n',
      ),
    ),
    "transport.migration.prefer_iroh",
  );
  assertEquals(e.code, "conflict");
});

Deno.test("a TOML syntax error names the line and column", () => {
  const text = '[node]\nid = 1\n[transport]\nmode = "dual\n';
  const [e, ...rest] = invalid(text);
  assertEquals(rest, []);
  assertEquals(e!.code, "toml_syntax");
  assertEquals(e!.line, 4);
  assert(e!.message.startsWith("config:4:"), e!.message);
  const withSource = parseConfig("[node]\nid = 1\nid = 2\n", "/etc/blixard/agent.toml");
  assert(!withSource.ok);
  assertEquals(withSource.errors[0]!.line, 3);
  assert(
    withSource.errors[0]!.message.startsWith("/etc/blixard/agent.toml:3:"),
    withSource.errors[0]!.message,
  );
});

Deno.test("every error in a file is reported at once", () => {
  const issues = invalid(`
[node]
id = 0
[transport]
mode = "grpc"
[transport.migration]
raft_transport = "quic"
fallback_to_grpc = "yes"
[grpc]
bind = "0.0.0.0:7400"
[iroh]
relays = "default"
[[cluster.peers]]
id = 2
endpoint_id = "nothex"
[limits]
max_frame_bytes = 1
[vm]
backends = ["firecracker"]
`);
  assertEquals(
    issues.map((i) => [i.path, i.code]).sort(),
    [
      ["cluster.peers[0].endpoint_id", "invalid_value"],
      ["grpc.bind", "insecure"],
      ["iroh.relays", "unknown_key"],
      ["limits.max_frame_bytes", "out_of_range"],
      ["node.id", "out_of_range"],
      ["transport.migration.fallback_to_grpc", "wrong_type"],
      ["transport.migration.raft_transport", "invalid_value"],
      ["vm.backends[0]", "invalid_value"],
    ],
  );
});

Deno.test("whatever the text, parseConfig returns a result and never throws", () => {
  const samples = [
    "",
    "\u0000",
    "[[node]]\nid = 1",
    "node = 5",
    "[node]\nid = 1\n[cluster]\npeers = 3",
    "[node]\nid = 1\n[[cluster.peers]]\n[[cluster.peers]]\nid = 1",
    "[node]\nid = 1979-05-27T07:32:00Z",
    "[node]\nid = 9007199254740993",
    "[node]\nid = inf",
    '[node]\nid = 1\n[iroh]\nrelay = { url = "https://x" }',
    "[node]\nid = 1\n[limits]\nrequest_deadline_ms = nan",
  ];
  for (const text of samples) {
    const result = parseConfig(text);
    if (!result.ok) {
      assert(result.errors.length > 0);
      for (const e of result.errors) assert(e.message.startsWith("config"), e.message);
    }
  }
});

Deno.test("[metrics] takes any host:port, loopback or not, and refuses what is not one", () => {
  const { config, warnings } = valid(
    withNode('[metrics]\nbind = "0.0.0.0:9464"\nenabled = false\n'),
  );
  assertEquals(config.metrics, { enabled: false, bind: "0.0.0.0:9464" });
  // Read-only endpoints: a non-loopback address needs no TLS and draws no warning.
  assertEquals(warnings, []);
  assertEquals(valid(withNode('[metrics]\nbind = "[::1]:0"\n')).config.metrics.bind, "[::1]:0");
  const issues = invalid(withNode('[metrics]\nbind = "9464"\nenabled = "yes"\n'));
  assertEquals(issues.map((i) => [i.path, i.code]), [
    ["metrics.enabled", "wrong_type"],
    ["metrics.bind", "invalid_value"],
  ]);
  assertEquals(
    issues[1]!.message,
    'config: metrics.bind = "9464": expected "host:port" with port 0-65535 (IPv6 in brackets), e.g. "0.0.0.0:9464"',
  );
});

Deno.test("[vm] refuses an empty or repeated backend list and a backend it does not know", () => {
  assertEquals(
    invalid(withNode("[vm]\nbackends = []\n")).map((i) => [i.path, i.code]),
    [["vm.backends", "invalid_value"]],
  );
  const repeated = invalid(withNode('[vm]\nbackends = ["qemu", "qemu"]\n'));
  assertEquals(repeated.map((i) => i.path), ["vm.backends[1]"]);
  const unknown = invalid(withNode('[vm]\nbackends = ["firecracker"]\n'));
  assertEquals(
    unknown[0]!.message,
    'config: vm.backends[0] = "firecracker": expected "qemu" or "process"',
  );
  // The key of an older draft is named as unknown, not silently ignored.
  assertEquals(invalid(withNode('[vm]\nbackend = "qemu"\n')).map((i) => [i.path, i.code]), [
    ["vm.backend", "unknown_key"],
  ]);
  assertEquals(
    valid(withNode('[vm]\nbackends = ["process"]\nvcpus = 4\nmemory_mib = 2048\n')).config.vm,
    {
      backends: ["process"],
      vcpus: 4,
      memoryMib: 2048,
      accel: "auto",
      qemuBinary: "qemu-system-x86_64",
      nodeLostAfterMs: 30_000,
      onAgentStop: "leave",
    },
  );
});
