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

Deno.test("a key too long and a value over 64 KiB, given, from a file or from stdin, are refused before any node is called", async () => {
  await tempDir(async (dir) => {
    // Nothing listens there: a check made after calling would fail with exit 1, not 2.
    const nowhere = ["--addr", `127.0.0.1:${freeTcpPort()}`];
    const long = await blixard(["meta", "get", "k".repeat(300), ...nowhere]);
    assertEquals(long.code, 2, long.stderr);
    assert(
      long.stderr.startsWith("blixard: meta get: metadata key: 300 bytes; expected at most 256\n"),
      long.stderr,
    );

    const big = "v".repeat(64 * 1024 + 1);
    const given = await blixard(["meta", "put", "k", big, ...nowhere]);
    assertEquals(given.code, 2, given.stderr);
    assert(
      given.stderr.startsWith(
        "blixard: meta put: VALUE is 65537 bytes; a value is at most 65536 bytes (64 KiB) of UTF-8\n",
      ),
      given.stderr,
    );
    const file = `${dir}/big`;
    await Deno.writeTextFile(file, big);
    const fromFile = await blixard([
      "meta",
      "cas",
      "k",
      "--expect",
      "0",
      "--value-file",
      file,
      ...nowhere,
    ]);
    assertEquals(fromFile.code, 2, fromFile.stderr);
    assert(
      fromFile.stderr.startsWith(
        `blixard: meta cas: the value in ${file} is over the limit: a value is at most 65536 bytes (64 KiB) of UTF-8\n`,
      ),
      fromFile.stderr,
    );
    const fromStdin = await blixard(["meta", "put", "k", "-", ...nowhere], { stdin: big });
    assertEquals(fromStdin.code, 2, fromStdin.stderr);
    assert(fromStdin.stderr.includes("the value in stdin is over the limit"), fromStdin.stderr);

    // Exactly 64 KiB is allowed: this one gets as far as calling, and finds nobody.
    const atLimit = await blixard(["meta", "put", "k", "-", ...nowhere], { stdin: big.slice(1) });
    assertEquals(atLimit.code, 1, atLimit.stderr);
    assert(atLimit.stderr.includes("ECONNREFUSED"), atLimit.stderr);
  });
});

Deno.test("meta and cluster commands a node is not running for fail with exit 1 and the reason; malformed ones with exit 2", async () => {
  const port = freeTcpPort();
  const down = await blixard(["meta", "get", "k", "--addr", `127.0.0.1:${port}`]);
  assertEquals(down.code, 1);
  assert(
    down.stderr.startsWith(`blixard: meta get: UNAVAILABLE:`) &&
      down.stderr.endsWith(`ECONNREFUSED 127.0.0.1:${port}.\n`),
    down.stderr,
  );
  const write = await blixard([
    "meta",
    "del",
    "k",
    "--request-id",
    "r-1",
    "--addr",
    `127.0.0.1:${port}`,
  ]);
  assertEquals(write.code, 1);
  assert(write.stderr.includes("run the same command with --request-id r-1"), write.stderr);
  const member = await blixard(["cluster", "transfer", "--to", "2", "--addr", `127.0.0.1:${port}`]);
  assertEquals(member.code, 1);
  assert(
    member.stderr.startsWith(
      `blixard: cluster transfer: cannot reach the member at grpc 127.0.0.1:${port}: UNAVAILABLE:`,
    ),
    member.stderr,
  );

  const usageErrors: [string[], string][] = [
    [["meta", "cas", "k", "v"], "meta cas: --expect REV is required"],
    [["meta", "cas", "k", "--expect", "r7", "v"], "meta cas: --expect r7: expected a revision"],
    [["meta", "put", "k"], "meta put: VALUE is required (or - for stdin, or --value-file F)"],
    [["meta", "put", "k", "v", "w"], 'meta put: unexpected argument "w"'],
    [["meta", "put", "k", "v", "--request-id", "has space"], "meta put: --request-id: request id"],
    [["meta", "list", "--limit", "1001"], "meta list: --limit 1001: expected 1 to 1000"],
    [["meta", "get", "k"], "meta get: give exactly one of --ticket (Iroh) or --addr (gRPC)"],
    [
      ["cluster", "join", "--node-id", "4"],
      "cluster join: --node-id needs --node-ticket or --node-grpc",
    ],
    [["cluster", "join", "--config", "f.toml", "--node-id", "4"], "cluster join: --config reads"],
    [["cluster", "leave", "--node-id", "0"], "cluster leave: --node-id 0: expected a node id"],
    [["cluster", "transfer"], "cluster transfer: --to N is required"],
  ];
  for (const [args, message] of usageErrors) {
    const r = await blixard([
      ...args,
      ...(args.includes("get") ? [] : ["--addr", `127.0.0.1:${port}`]),
    ]);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert(r.stderr.startsWith(`blixard: ${message}`), `${args.join(" ")}: ${r.stderr}`);
  }
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
