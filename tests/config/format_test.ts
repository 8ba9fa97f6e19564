/**
 * formatEffectiveConfig: the TOML `blixard config check` prints. Reading it
 * back must give the same config, for defaults, for every example and for a
 * file that sets every key.
 */

import { assert, assertEquals } from "../assert.ts";
import { type AgentConfig, formatEffectiveConfig, loadConfigFile } from "../../src/config/mod.ts";
import { configSchema } from "../../src/config/schema.ts";
import { docOf, keyPaths, schemaAt, tableKeys } from "../../src/config/introspect.ts";
import { endpointId, valid, withNode } from "./helpers.ts";

/**
 * Sets every key, optional ones included, to something other than its
 * default; but not the keys that are not supported yet, which are refused.
 */
const EVERY_KEY = `
[node]
id = 4
data_dir = "/srv/blixard"
[transport]
mode = "dual"
[transport.migration]
prefer_iroh = ["cluster", "vm_ops"]
raft_transport = "adaptive"
fallback_to_grpc = false
[grpc]
bind = "0.0.0.0:7500"
allow_insecure = true
[grpc.tls]
cert_file = "/etc/tls/n.crt"
key_file = "/etc/tls/n.key"
ca_file = "/etc/tls/ca \\"quoted\\".crt"
[iroh]
bind = "[::]:7501"
relay = ["https://relay.example.com", "http://10.0.0.9:3340"]
secret_key_file = "/srv/keys/iroh"
alpn = "blixard/test"
[cluster]
operator_keys = ["${endpointId(7)}", "${endpointId(8)}"]
[[cluster.peers]]
id = 2
endpoint_id = "${endpointId(2)}"
addresses = ["10.0.0.2:7501", "[fd00::2]:7501"]
ticket = "endpointaa5wuj54z23killcuounaktpbvzwkmqvo4o6eq5ghlaerimllhncsaa"
grpc_address = "node-2.example.com:7500"
[[cluster.peers]]
id = 3
ticket = "endpointaa"
[limits]
max_frame_bytes = 1048576
max_inflight_requests = 64
max_concurrent_streams = 8
request_deadline_ms = 5000
max_request_deadline_ms = 60000
shutdown_timeout_ms = 2500
[metrics]
enabled = false
bind = "[::]:9500"
[vm]
backends = ["process", "qemu"]
vcpus = 6
memory_mib = 12288
accel = "tcg"
qemu_binary = "/opt/qemu/bin/qemu-system-x86_64"
node_lost_after_ms = 45000
on_agent_stop = "stop"
`;

function roundTrip(config: AgentConfig): void {
  const text = formatEffectiveConfig(config);
  const again = valid(text);
  assertEquals(again.config, config, text);
  assertEquals(formatEffectiveConfig(again.config), text);
}

Deno.test("the defaults print and read back as the same config", () => {
  roundTrip(valid(withNode("")).config);
});

Deno.test("a file that sets every key prints and reads back as the same config", () => {
  roundTrip(valid(EVERY_KEY).config);
});

Deno.test("every example prints and reads back as the same config, without warnings", async () => {
  for await (const entry of Deno.readDir(new URL("../../deploy/examples/", import.meta.url))) {
    const result = await loadConfigFile(
      new URL(`../../deploy/examples/${entry.name}`, import.meta.url).pathname,
    );
    assert(result.ok, entry.name);
    roundTrip(result.config);
    assertEquals(valid(formatEffectiveConfig(result.config)).warnings, []);
  }
});

Deno.test("the printout names every key of the schema; unsupported tables as comments", () => {
  const text = formatEffectiveConfig(valid(EVERY_KEY).config);
  const unsupported = (path: string[]) =>
    docOf(schemaAt(configSchema, path)!).notSupported !== undefined;
  for (const path of keyPaths(configSchema)) {
    const key = path.at(-1)!;
    const name = path.join(".");
    const schema = schemaAt(configSchema, path);
    const keys = schema === undefined ? undefined : tableKeys(schema);
    if (keys !== undefined && keys.every((k) => unsupported([...path, k]))) {
      assert(text.includes(`# [${name}]: not supported yet`), `no note on [${name}]`);
    } else if (keys !== undefined) assert(text.includes(`[${name}]`), `no table ${name}`);
    else if (schema !== undefined && unsupported(path)) {
      assert(!new RegExp(`^${key} = `, "m").test(text.split(`[${path[0]}]`)[1] ?? ""), name);
    } else if (name !== "cluster.peers") {
      assert(new RegExp(`^${key} = `, "m").test(text), `no key ${name}`);
    }
  }
});

Deno.test("unset optional keys and ignored tables show as comments", () => {
  const text = formatEffectiveConfig(valid(withNode('[transport]\nmode = "iroh"\n')).config);
  assert(text.includes("# cert_file: not set"), text);
  assert(text.includes('[transport.migration]\n# ignored in mode "iroh"'), text);
  assert(text.includes("# [[cluster.peers]]: none"), text);
  assert(text.includes("max_frame_bytes = 16777216  # 16 MiB"), text);
});
