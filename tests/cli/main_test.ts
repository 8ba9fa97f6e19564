/**
 * The command line's surface: top-level and per-command help, versions,
 * usage errors. The compiled executable: tests/package/.
 */

import { assert, assertEquals } from "../assert.ts";
import { COMMANDS } from "../../src/cli/main.ts";

const root = new URL("../../", import.meta.url).pathname;

/** Runs the command line from source, as `deno task blixard` does. */
async function blixard(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "src/cli/main.ts", ...args],
    cwd: root,
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("blixard --help lists the commands, health and status over gRPC as well as Iroh", async () => {
  const r = await blixard("--help");
  assertEquals(r.code, 0);
  assert(r.stdout.includes("Usage: blixard <command>"), r.stdout);
  for (const name of [...Object.keys(COMMANDS), "version"]) {
    assert(new RegExp(`^  ${name} `, "m").test(r.stdout), `no line for ${name}:\n${r.stdout}`);
  }
  for (const name of ["health", "status"]) {
    const line = new RegExp(`^  ${name} .*$`, "m").exec(r.stdout)![0];
    assert(line.includes("--ticket") && line.includes("--addr"), line);
  }
  // What is not built yet is said once, and gRPC clients are not among it.
  const notYet = r.stdout.slice(r.stdout.indexOf("Not yet:"));
  assert(notYet.startsWith("Not yet:"), r.stdout);
  assert(!/--addr|gRPC/.test(notYet), notYet);
});

Deno.test("each subcommand's help is its own: its usage line, and exactly its own options", () => {
  for (const [name, command] of Object.entries(COMMANDS)) {
    const usages = [...command.help.matchAll(/^(?:Usage: | {7})blixard (\S+)/gm)].map((m) => m[1]);
    assert(usages.length > 0, `${name}: no usage line`);
    assertEquals(new Set(usages), new Set([name]), `${name}'s help shows another command's usage`);
    const mentioned = new Set(
      [...command.help.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]),
    );
    const own = Object.keys(command.options).filter((o) => o !== "help");
    assertEquals([...mentioned].sort(), own.sort(), `${name}: options in its help`);
    for (const [option, spec] of Object.entries(command.options)) {
      if (spec.short && option !== "help") {
        assert(command.help.includes(`-${spec.short}, --${option}`), `${name}: -${spec.short}`);
      }
    }
  }
  assert(COMMANDS.health!.help !== COMMANDS.status!.help, "health and status share one help");
});

Deno.test("blixard help COMMAND prints that command's help; an unknown one is a usage error", async () => {
  const r = await blixard("help", "status");
  assertEquals(r.code, 0);
  assertEquals(r.stdout, `${COMMANDS.status!.help}\n`);
  const own = await blixard("status", "--help");
  assertEquals(own.stdout, r.stdout);
  const unknown = await blixard("help", "frobnicate");
  assertEquals(unknown.code, 2);
  assert(unknown.stderr.includes('no help for "frobnicate"'), unknown.stderr);
});

Deno.test("blixard version --json names the agent, runtime and wire protocol versions", async () => {
  const r = await blixard("version", "--json");
  assertEquals(r.code, 0);
  const info = JSON.parse(r.stdout);
  assertEquals(info.protocol, 1);
  assertEquals(info.deno, Deno.version.deno);
  assert(/^\d+\.\d+\.\d+$/.test(info.agent), info.agent);
});

Deno.test("an unknown command or flag fails with exit 2 and says what was wrong", async () => {
  let r = await blixard("frobnicate");
  assertEquals(r.code, 2);
  assert(r.stderr.includes('unknown command "frobnicate"'), r.stderr);
  r = await blixard("--bogus");
  assertEquals(r.code, 2);
  assert(r.stderr.includes("--bogus"), r.stderr);
});
