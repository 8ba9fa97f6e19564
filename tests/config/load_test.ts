/** Reading a config file from disk, and throwing for callers that prefer to. */

import { assert, assertEquals } from "../assert.ts";
import { ConfigError, configOrThrow, loadConfigFile, parseConfig } from "../../src/config/mod.ts";
import { thrown } from "../assert.ts";

Deno.test("a missing file is an error that names the path", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nope.toml`;
  const result = await loadConfigFile(path);
  await Deno.remove(dir);
  assert(!result.ok);
  assertEquals(result.errors.map((e) => e.code), ["unreadable_file"]);
  assertEquals(result.errors[0]!.message, `${path}: cannot read config file: no such file`);
});

Deno.test("a file's errors start with its path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/agent.toml`;
    await Deno.writeTextFile(path, '[node]\nid = 1\n[transport]\nmode = "quic"\n');
    const result = await loadConfigFile(path);
    assert(!result.ok);
    assertEquals(
      result.errors[0]!.message,
      `${path}: transport.mode = "quic": expected "grpc", "iroh" or "dual"`,
    );

    await Deno.writeTextFile(path, "[node]\nid = 7\n");
    const good = await loadConfigFile(path);
    assert(good.ok);
    assertEquals(good.config.node.id, 7);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("configOrThrow throws a ConfigError carrying every issue", () => {
  const error = thrown(ConfigError, () => configOrThrow(parseConfig("[node]\nid = 0\nname = 1\n")));
  assertEquals(error.name, "ConfigError");
  assertEquals(error.issues.map((i) => i.code), ["out_of_range", "unknown_key"]);
  assertEquals(error.message, error.issues.map((i) => i.message).join("\n"));
  assertEquals(configOrThrow(parseConfig("[node]\nid = 3\n")).node.id, 3);
});
