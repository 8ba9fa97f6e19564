/**
 * checkConfigFiles: the files a config names, checked on disk, so that
 * `config check` and `node` say which key names a file that cannot be used
 * instead of the node failing when a listener starts. Real files in a
 * temporary directory.
 */

import { assert, assertEquals } from "../assert.ts";
import { checkConfigFiles, loadConfigFile } from "../../src/config/mod.ts";
import { valid } from "./helpers.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-files-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function config(dir: string, extra = "") {
  return valid(`[node]\nid = 1\ndata_dir = "${dir}/data"\n${extra}`).config;
}

const TLS = (dir: string) =>
  `[grpc.tls]\ncert_file = "${dir}/node.crt"\nkey_file = "${dir}/node.key"\nca_file = "${dir}/ca.crt"\n`;

Deno.test("a TLS file that does not exist is named by its key, with the path and why", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/node.key`, "key");
    await Deno.mkdir(`${dir}/ca.crt`);
    const issues = await checkConfigFiles(config(dir, TLS(dir)), "agent.toml");
    assertEquals(issues.map((i) => [i.code, i.path, i.message]), [
      [
        "unreadable_file",
        "grpc.tls.cert_file",
        `agent.toml: grpc.tls.cert_file = "${dir}/node.crt": cannot read it: no such file`,
      ],
      [
        "unreadable_file",
        "grpc.tls.ca_file",
        `agent.toml: grpc.tls.ca_file = "${dir}/ca.crt": cannot read it: it is a directory`,
      ],
    ]);
  });
});

Deno.test("readable files, a missing key in a creatable directory: no problem, and nothing left behind", async () => {
  await withDir(async (dir) => {
    for (const f of ["node.crt", "node.key", "ca.crt"]) await Deno.writeTextFile(`${dir}/${f}`, f);
    assertEquals(await checkConfigFiles(config(dir, TLS(dir))), []);
    // data_dir does not exist yet: the node creates it, so the check must not.
    const left = [];
    for await (const e of Deno.readDir(dir)) left.push(e.name);
    assertEquals(left.sort(), ["ca.crt", "node.crt", "node.key"]);
  });
});

Deno.test("a secret key file that group or others can read is refused, as the node would", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/data`);
    const key = `${dir}/data/iroh_secret_key`;
    await Deno.writeTextFile(key, "11".repeat(32) + "\n");
    await Deno.chmod(key, 0o644);
    const [issue, ...rest] = await checkConfigFiles(config(dir));
    assertEquals(rest, []);
    assertEquals(issue!.code, "insecure");
    assertEquals(
      issue!.message,
      `config: iroh.secret_key_file = "${key}": group or others can access it (mode 0644) and the node refuses such a key (allowed: 0600 or 0400); fix with: chmod 600 ${key}`,
    );
    await Deno.chmod(key, 0o600);
    assertEquals(await checkConfigFiles(config(dir)), []);
  });
});

Deno.test("a secret key or data directory that cannot be created where the config puts it is refused", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    const issues = await checkConfigFiles(
      valid(
        `[node]\nid = 1\ndata_dir = "${dir}/file/data"\n[iroh]\nsecret_key_file = "${dir}/file/keys/k"\n`,
      ).config,
    );
    assertEquals(issues.map((i) => [i.code, i.path, i.message]), [
      [
        "unwritable_path",
        "iroh.secret_key_file",
        `config: iroh.secret_key_file = "${dir}/file/keys/k": cannot create it: ${dir}/file is not a directory`,
      ],
      [
        "unwritable_path",
        "node.data_dir",
        `config: node.data_dir = "${dir}/file/data": cannot use it: ${dir}/file is not a directory`,
      ],
    ]);
  });
});

Deno.test("loadConfigFile checks the named files only when asked to", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/agent.toml`;
    await Deno.writeTextFile(
      path,
      `[node]\nid = 1\ndata_dir = "${dir}/data"\n[grpc.tls]\ncert_file = "${dir}/x.crt"\nkey_file = "${dir}/x.key"\n`,
    );
    assert((await loadConfigFile(path)).ok);
    const checked = await loadConfigFile(path, { checkFiles: true });
    assert(!checked.ok);
    assertEquals(checked.errors.map((e) => e.path), ["grpc.tls.cert_file", "grpc.tls.key_file"]);
    assert(checked.errors[0]!.message.startsWith(`${path}: grpc.tls.cert_file = `));
  });
});
