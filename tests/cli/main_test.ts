import { assert, assertEquals } from "../assert.ts";

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

Deno.test("blixard --help lists the commands and exits 0", async () => {
  const r = await blixard("--help");
  assertEquals(r.code, 0);
  assert(r.stdout.includes("Usage: blixard <command>"), r.stdout);
  assert(r.stdout.includes("version"), r.stdout);
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

const denort = Deno.env.get("DENORT_BIN");
Deno.test({
  name: denort
    ? "the compiled executable runs the same command line"
    : "the compiled executable runs the same command line (SKIPPED: set DENORT_BIN to a denort " +
      Deno.version.deno + "; it cannot be downloaded on this machine)",
  ignore: !denort,
  async fn() {
    const output = await Deno.makeTempFile({ prefix: "blixard-" });
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", "--output", output],
      cwd: root,
    }).output();
    assertEquals(build.code, 0, new TextDecoder().decode(build.stderr));
    const run = await new Deno.Command(output, { args: ["version", "--json"] }).output();
    assertEquals(run.code, 0);
    assertEquals(JSON.parse(new TextDecoder().decode(run.stdout)).protocol, 1);
    await Deno.remove(output);
  },
});
