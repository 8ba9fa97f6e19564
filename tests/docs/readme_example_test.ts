/**
 * The README's run-a-node example works as written: its commands, taken from
 * the README, run from the checkout print no warning and leave nothing in it.
 *
 * The two values a reader copies by hand are filled in from what the commands
 * before printed: `<the endpoint id printed above>` (from `key generate`) and
 * `<ticket>` (from the node). The command that ends in `&` runs in the
 * background, as in a shell; the others run one after another, each in bash
 * with the shell variables the example set before (`dir`).
 */

import { assert, assertEquals } from "../assert.ts";
import { within } from "../wait.ts";

const root = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();
const WAIT_MS = 60_000;
// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The commands of the sh block after "To run a node and talk to it", heredocs kept whole. */
function readmeExample(readme: string): string[] {
  const at = readme.search(/To\s+run\s+a\s+node\s+and\s+talk\s+to\s+it/);
  assert(at >= 0, 'README: no "To run a node and talk to it" example');
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))?.[1];
  assert(block !== undefined, "README: the run-a-node example has no sh block");
  const lines = block.split("\n");
  const commands: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    // A comment starts after two spaces or more; a heredoc's body keeps everything.
    const line = lines[i]!.replace(/\s{2,}#.*$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const heredoc = /<<(\w+)$/.exec(line);
    if (!heredoc) {
      commands.push(line);
      continue;
    }
    const end = lines.indexOf(heredoc[1]!, i + 1);
    assert(end > i, `README: heredoc ${heredoc[1]} is not closed`);
    commands.push([line, ...lines.slice(i + 1, end), heredoc[1]].join("\n"));
    i = end;
  }
  return commands;
}

/** Every file and directory under the checkout, but dependencies and git's own. */
async function checkoutEntries(dir = root, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (prefix === "" && (e.name === "node_modules" || e.name === ".git")) continue;
    out.push(prefix + e.name);
    if (e.isDirectory) {
      out.push(...await checkoutEntries(`${dir}/${e.name}`, `${prefix}${e.name}/`));
    }
  }
  return out.sort();
}

function bash(command: string, env: Record<string, string>, signal?: AbortSignal): Deno.Command {
  return new Deno.Command("bash", {
    args: ["-c", command],
    cwd: root,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal,
  });
}

/** Collects a stream's text; `text()` resolves when it ends. */
function collect(stream: ReadableStream<Uint8Array>, onText?: (all: string) => void) {
  let all = "";
  const done = (async () => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      all += chunk;
      onText?.(all);
    }
  })();
  return { text: async () => (await done, all), now: () => all };
}

Deno.test("the README's run-a-node example runs as written: no warning, nothing left in the checkout", async () => {
  const commands = readmeExample(await Deno.readTextFile(`${root}README.md`));
  const before = await checkoutEntries();
  const vars: Record<string, string> = {};
  const printed: string[] = [];
  let operatorId: string | undefined;
  let ticket: string | undefined;
  let node: {
    child: Deno.ChildProcess;
    stdout: () => Promise<string>;
    stderr: () => Promise<string>;
  } | undefined;
  try {
    for (const written of commands) {
      let command = written
        .replaceAll("<the endpoint id printed above>", operatorId ?? "<no id printed yet>")
        .replaceAll("<ticket>", ticket ?? "<no ticket printed yet>");
      const unfilled = /<[a-z][^<>]*>/.exec(command.replace(/<<\w+/g, ""));
      assert(
        unfilled === null,
        `README example: unknown placeholder ${unfilled?.[0]} in ${written}`,
      );

      // A shell variable the later commands use, such as dir=$(mktemp -d).
      const assignment = /^(\w+)=(\$\(.*\)|\S+)$/.exec(command);
      if (assignment) {
        const out = await bash(`${command} && printf %s "$${assignment[1]}"`, vars).output();
        assertEquals(out.code, 0, `${written}: ${dec.decode(out.stderr)}`);
        vars[assignment[1]!] = dec.decode(out.stdout);
        assert(vars[assignment[1]!] !== "", `${written} set nothing`);
        continue;
      }

      if (command.endsWith("&")) {
        command = command.slice(0, -1).trim();
        const child = bash(command, vars).spawn();
        const stdout = collect(child.stdout);
        const stderr = collect(child.stderr);
        node = { child, stdout: stdout.text, stderr: stderr.text };
        ticket = await within(
          (async () => {
            for (;;) {
              const found = /ticket: (\S+)/.exec(stdout.now())?.[1];
              if (found) return found;
              const exited = await Promise.race([
                child.status.then(() => true),
                new Promise<false>((r) => setTimeout(() => r(false), 20)),
              ]);
              if (exited) throw new Error(`${written} exited:\n${stdout.now()}${stderr.now()}`);
            }
          })(),
          WAIT_MS,
          `${written} printing its ticket`,
        );
        continue;
      }

      // A command that does not end in time is killed, so the test cannot hang on it.
      const out = await bash(command, vars, AbortSignal.timeout(WAIT_MS)).output();
      const stdout = dec.decode(out.stdout);
      const stderr = dec.decode(out.stderr);
      printed.push(stdout, stderr);
      operatorId ??= /^endpoint id: ([0-9a-f]{64})$/m.exec(stdout)?.[1];
      assertEquals(out.code, 0, `${written} exited with ${out.code}:\n${stdout}${stderr}`);
      if (/\bhealth\b/.test(command)) assert(/: SERVING\b/.test(stdout), stdout);
      if (/\bstatus\b.*--json/.test(command)) assertEquals(JSON.parse(stdout).cluster.nodeId, "1");
    }

    assert(node !== undefined, "the example starts no node in the background");
    const status = await within(node.child.status, WAIT_MS, "the node stopping");
    printed.push(await node.stdout(), await node.stderr());
    assertEquals(status.code, 0, `the node exited with ${status.code}: ${printed.at(-1)}`);
    node = undefined;

    const warnings = printed.join("\n").replace(ANSI, "").split("\n").filter((l) =>
      /warn/i.test(l)
    );
    assertEquals(warnings, [], "the example printed warnings");
    assertEquals(await checkoutEntries(), before, "the example left files in the checkout");
  } finally {
    if (node) {
      // npx and deno task stand between bash and the node: stop the node by its pid file too.
      const pid = await Deno.readTextFile(`${vars.dir}/data/blixard.pid`).catch(() => "");
      if (/^\d+\s*$/.test(pid)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* already gone */ }
      }
      node.child.kill("SIGKILL");
      await node.child.status;
      await node.stdout();
      await node.stderr();
    }
    if (vars.dir?.startsWith("/")) await Deno.remove(vars.dir, { recursive: true }).catch(() => {});
  }
});
