/**
 * What the command line says when something is wrong, as an operator reads
 * it: each message says it once, says who was refused, and ends where the
 * sentence ends. Real `blixard` processes.
 */

import { assert, assertEquals } from "../assert.ts";
import { blixard, freeTcpPort } from "./helpers.ts";

async function tempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "blixard-msg-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a truncated ticket is refused once, with what to copy, before any key is created", async () => {
  await tempDir(async (dir) => {
    const key = `${dir}/operator_key`;
    const r = await blixard(["health", "--ticket", "endpointabc", "--key", key]);
    assertEquals(r.code, 2, r.stderr);
    assertEquals(
      r.stderr,
      'blixard: ticket "endpointabc": expected an "endpoint…" ticket: invalid length at 2; ' +
        'copy the whole "ticket:" line the node printed\n' +
        "Try 'blixard health --help'.\n",
    );
    assert(!(await exists(key)), "a key was created for a call that could not be made");
  });
});

Deno.test("a refused gRPC connection ends with the reason, not an empty note", async () => {
  const port = freeTcpPort();
  const r = await blixard(["status", "--addr", `127.0.0.1:${port}`, "--timeout", "2000"]);
  assertEquals(r.code, 1);
  assert(!r.stderr.includes("Resolution note"), r.stderr);
  assert(
    r.stderr.endsWith(`ECONNREFUSED 127.0.0.1:${port}.\n`),
    `expected the reason at the end: ${JSON.stringify(r.stderr)}`,
  );
});

/** Keeps the child's Deno cache where it is when HOME moves, so it need not start cold. */
function denoDir(): Record<string, string> {
  const home = Deno.env.get("HOME");
  const dir = Deno.env.get("DENO_DIR") ?? (home ? `${home}/.cache/deno` : undefined);
  return dir ? { DENO_DIR: dir } : {};
}

Deno.test("an empty or relative XDG_CONFIG_HOME is ignored: the operator key goes under HOME", async () => {
  await tempDir(async (dir) => {
    const work = `${dir}/work`;
    await Deno.mkdir(work);
    for (const xdg of ["", "relative/config"]) {
      const r = await blixard(["key", "generate", "--json"], {
        cwd: work,
        env: { ...denoDir(), HOME: dir, XDG_CONFIG_HOME: xdg, BLIXARD_OPERATOR_KEY: "" },
      });
      assertEquals(r.code, 0, r.stderr);
      assertEquals(JSON.parse(r.stdout).file, `${dir}/.config/blixard/operator_key`);
      await Deno.remove(`${dir}/.config`, { recursive: true });
    }
    const left = [];
    for await (const e of Deno.readDir(work)) left.push(e.name);
    assertEquals(left, [], "a key was written under the working directory");
    const absolute = await blixard(["key", "generate", "--json"], {
      cwd: work,
      env: { ...denoDir(), HOME: dir, XDG_CONFIG_HOME: `${dir}/xdg`, BLIXARD_OPERATOR_KEY: "" },
    });
    assertEquals(JSON.parse(absolute.stdout).file, `${dir}/xdg/blixard/operator_key`);
  });
});

Deno.test("config check reports errors without claiming to have started nothing", async () => {
  await tempDir(async (dir) => {
    const file = `${dir}/agent.toml`;
    await Deno.writeTextFile(file, '[node]\nid = 1\n[transport]\nmode = "quic"\n');
    const r = await blixard(["config", "check", file]);
    assertEquals(r.code, 1);
    assertEquals(
      r.stderr,
      `${file}: transport.mode = "quic": expected "grpc", "iroh" or "dual"\n${file}: 1 error(s)\n`,
    );
  });
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
