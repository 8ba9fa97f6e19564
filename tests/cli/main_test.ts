/**
 * The command line's surface: top-level and per-command help, versions,
 * usage errors. The compiled executable: tests/package/.
 */

import { assert, assertEquals } from "../assert.ts";
import { type Command, COMMANDS } from "../../src/cli/main.ts";

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
  // Everything the product brief names is built: nothing is announced as to come.
  assert(!r.stdout.includes("Not yet"), r.stdout);
});

/** The options a help text mentions (`--name`), `--help` aside. */
function mentionedOptions(help: string): string[] {
  const mentioned = new Set(
    [...help.matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]!),
  );
  mentioned.delete("help");
  return [...mentioned].sort();
}

/** Fails unless `help` mentions exactly `options` and shows each short letter. */
function assertOwnOptions(label: string, help: string, options: Command["options"]): void {
  const own = Object.keys(options).filter((o) => o !== "help");
  assertEquals(mentionedOptions(help), own.sort(), `${label}: options in its help`);
  for (const [option, spec] of Object.entries(options)) {
    if (spec.short && option !== "help") {
      assert(help.includes(`-${spec.short}, --${option}`), `${label}: -${spec.short}`);
    }
  }
}

Deno.test("each subcommand's help is its own: its usage line, and exactly its own options", () => {
  for (const [name, command] of Object.entries(COMMANDS)) {
    const usages = [...command.help.matchAll(/^(?:Usage: | {7})blixard (\S+)/gm)].map((m) => m[1]);
    assert(usages.length > 0, `${name}: no usage line`);
    assertEquals(new Set(usages), new Set([name]), `${name}'s help shows another command's usage`);
    if (!command.subcommands) {
      assertOwnOptions(name, command.help, command.options);
      continue;
    }
    // An overview names its subcommands and no option they do not have.
    const all = new Set(Object.values(command.subcommands).flatMap((s) => Object.keys(s.options)));
    for (const option of mentionedOptions(command.help)) {
      assert(
        all.has(option),
        `${name}: its overview mentions --${option}, which no subcommand has`,
      );
    }
    for (const [subName, sub] of Object.entries(command.subcommands)) {
      const label = `${name} ${subName}`;
      assert(
        new RegExp(`^  ${subName} `, "m").test(command.help),
        `${name}: no line for ${subName}`,
      );
      const subUsages = [...sub.help.matchAll(/^(?:Usage: | {7})blixard (\S+ \S+)/gm)].map((m) =>
        m[1]
      );
      assert(subUsages.length > 0, `${label}: no usage line`);
      assertEquals(new Set(subUsages), new Set([label]), `${label}'s help shows another's usage`);
      assertOwnOptions(label, sub.help, sub.options);
    }
  }
  assert(COMMANDS.health!.help !== COMMANDS.status!.help, "health and status share one help");
});

Deno.test("a subcommand's help is printed by --help, by -h and by 'blixard help COMMAND SUBCOMMAND'; an unknown subcommand is a usage error", async () => {
  const put = COMMANDS.meta!.subcommands!.put!.help;
  for (const args of [["meta", "put", "--help"], ["meta", "put", "-h"], ["help", "meta", "put"]]) {
    const r = await blixard(...args);
    assertEquals([r.code, r.stdout], [0, `${put}\n`], args.join(" "));
  }
  const overview = await blixard("cluster", "--help");
  assertEquals([overview.code, overview.stdout], [0, `${COMMANDS.cluster!.help}\n`]);
  const unknown = await blixard("cluster", "merge");
  assertEquals(unknown.code, 2);
  assert(
    unknown.stderr.startsWith(
      'blixard: unknown cluster command "merge": expected join, leave or transfer\n',
    ),
    unknown.stderr,
  );
  // An option of another subcommand is not this one's.
  const foreign = await blixard("meta", "get", "k", "--expect", "3", "--addr", "127.0.0.1:1");
  assertEquals(foreign.code, 2);
  assert(foreign.stderr.includes("--expect"), foreign.stderr);
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
