import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createEndpoint,
  defaultSecretKeyPath,
  endpointIdOf,
  formatSecretKey,
  loadOrCreateSecretKey,
  parseSecretKey,
  readSecretKeyFile,
  SecretKeyError,
} from "../../../src/transport/iroh/mod.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-key-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const VALID_HEX = "9f".repeat(32);

Deno.test("the key file is created with mode 0600 and reused: same endpoint id after reopening", async () => {
  await withTempDir(async (dir) => {
    const path = defaultSecretKeyPath(join(dir, "data"));
    const first = await loadOrCreateSecretKey(path);
    assert.equal(first.created, true);
    assert.equal(first.secretKey.length, 32);
    const info = await Deno.stat(path);
    assert.equal(info.mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(join(dir, "data"))).mode! & 0o777, 0o700);
    assert.equal(await Deno.readTextFile(path), formatSecretKey(first.secretKey));
    // No temporary file is left behind.
    assert.deepEqual([...Deno.readDirSync(join(dir, "data"))].map((e) => e.name), [
      "iroh_secret_key",
    ]);

    let firstId: string;
    {
      await using endpoint = await createEndpoint({
        secretKey: first.secretKey,
        bindAddr: "127.0.0.1:0",
        relayMode: "disabled",
      });
      firstId = endpoint.id;
      assert.equal(endpointIdOf(first.secretKey), firstId);
    }

    const second = await loadOrCreateSecretKey(path);
    assert.equal(second.created, false);
    assert.deepEqual(second.secretKey, first.secretKey);
    await using reopened = await createEndpoint({
      secretKey: second.secretKey,
      bindAddr: "127.0.0.1:0",
      relayMode: "disabled",
    });
    assert.equal(reopened.id, firstId);
  });
});

Deno.test("a key file that group or others can read is refused with its path, mode and the fix", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "iroh_secret_key");
    await Deno.writeTextFile(path, `${VALID_HEX}\n`, { mode: 0o600 });
    await Deno.chmod(path, 0o644);
    await assert.rejects(loadOrCreateSecretKey(path), (e: unknown) => {
      assert.ok(e instanceof SecretKeyError);
      assert.equal(e.code, "INSECURE_PERMISSIONS");
      assert.equal(e.path, path);
      assert.equal(e.mode, 0o644);
      assert.ok(e.message.includes(path), e.message);
      assert.ok(e.message.includes("0644"), e.message);
      assert.ok(e.message.includes(`chmod 600 ${path}`), e.message);
      return true;
    });
    // Refused, not rewritten.
    assert.equal(await Deno.readTextFile(path), `${VALID_HEX}\n`);
    for (const mode of [0o640, 0o604, 0o620, 0o601]) {
      await Deno.chmod(path, mode);
      await assert.rejects(
        readSecretKeyFile(path),
        (e: unknown) => e instanceof SecretKeyError && e.code === "INSECURE_PERMISSIONS",
      );
    }
    await Deno.chmod(path, 0o400);
    assert.deepEqual(await readSecretKeyFile(path), parseSecretKey(VALID_HEX, path));
  });
});

Deno.test("a malformed key file is refused with a clear error and left untouched", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "iroh_secret_key");
    const cases: Array<[string | Uint8Array, RegExp]> = [
      ["", /is empty/],
      ["\n", /is empty/],
      ["9f".repeat(31), /62 hex characters/],
      [`${VALID_HEX}00`, /66 hex characters/],
      [`${"9f".repeat(31)}zz`, /"z" at offset 62/],
      [`${VALID_HEX}\n\n`, /"\\n" at offset 64/],
      [` ${VALID_HEX}`, /" " at offset 0/],
      [new Uint8Array([0xff, 0xfe, 0x00, 0x80]), /not text/],
      ["a".repeat(5000), /5000 bytes/],
    ];
    for (const [content, expected] of cases) {
      await Deno.remove(path).catch(() => {});
      if (typeof content === "string") await Deno.writeTextFile(path, content, { mode: 0o600 });
      else await Deno.writeFile(path, content, { mode: 0o600 });
      await assert.rejects(loadOrCreateSecretKey(path), (e: unknown) => {
        assert.ok(e instanceof SecretKeyError, String(e));
        assert.equal(e.code, "MALFORMED");
        assert.ok(e.message.includes(path), e.message);
        assert.match(e.message, expected);
        return true;
      }, `content ${JSON.stringify(typeof content === "string" ? content.slice(0, 80) : "bytes")}`);
      const after = await Deno.readFile(path);
      assert.deepEqual(
        after,
        typeof content === "string" ? new TextEncoder().encode(content) : content,
      );
    }
  });
});

Deno.test("a key file path that is a directory is refused", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      loadOrCreateSecretKey(dir),
      (e: unknown) => e instanceof SecretKeyError && e.code === "NOT_A_FILE" && e.path === dir,
    );
  });
});

Deno.test("key text round-trips; upper case hex and a CRLF ending are accepted", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const text = formatSecretKey(key);
  assert.match(text, /^[0-9a-f]{64}\n$/);
  assert.deepEqual(parseSecretKey(text, "k"), key);
  assert.deepEqual(parseSecretKey(text.trimEnd().toUpperCase() + "\r\n", "k"), key);
  assert.deepEqual(parseSecretKey(text.trimEnd(), "k"), key);
});

Deno.test("concurrent first starts agree on one key", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "iroh_secret_key");
    const results = await Promise.all(
      Array.from({ length: 8 }, () => loadOrCreateSecretKey(path)),
    );
    const onDisk = await readSecretKeyFile(path);
    for (const r of results) assert.deepEqual(r.secretKey, onDisk);
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal([...Deno.readDirSync(dir)].length, 1);
  });
});

Deno.test("reading a key file that does not exist says so and creates nothing", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "missing");
    await assert.rejects(
      readSecretKeyFile(path),
      (e: unknown) => e instanceof SecretKeyError && e.code === "IO" && e.message.includes(path),
    );
    assert.equal([...Deno.readDirSync(dir)].length, 0);
  });
});
