/**
 * `deno task compile` (scripts/compile.ts): the `deno compile` executable
 * where a denort is available, and plain refusals of a DENORT_BIN that cannot
 * work. The compiled file is tested only with DENORT_BIN set: denort cannot be
 * downloaded on these machines and no npm package ships it; the test says so
 * in its name when it is skipped.
 *
 * May import: tests/assert.ts; the scripts run only as child processes.
 */

import { assert, assertEquals } from "../assert.ts";

const root = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

/** Runs scripts/compile.ts with `DENORT_BIN` set to `denort` and `--output output`. */
async function compile(denort: string, output: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/compile.ts", "--output", output],
    cwd: root,
    env: { DENORT_BIN: denort, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const denort = Deno.env.get("DENORT_BIN");
Deno.test({
  name: denort
    ? "the compiled executable runs alone, with a clean environment, and loads the Iroh addon"
    : "the compiled executable runs alone, with a clean environment, and loads the Iroh addon " +
      `(SKIPPED: set DENORT_BIN to a denort ${Deno.version.deno}; it cannot be downloaded on ` +
      "this machine)",
  ignore: !denort,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "blixard-compiled-" });
    try {
      const build = await compile(denort!, `${dir}/build/blixard`);
      assertEquals(build.code, 0, build.stderr);
      await Deno.mkdir(`${dir}/host`);
      await Deno.copyFile(`${dir}/build/blixard`, `${dir}/host/blixard`);
      const bare = (args: string[]) =>
        new Deno.Command(`${dir}/host/blixard`, {
          args,
          cwd: `${dir}/host`,
          clearEnv: true,
          env: { PATH: "/usr/bin:/bin", HOME: `${dir}/host` },
          stdin: "null",
        }).output();
      const version = await bare(["version", "--json"]);
      assertEquals(version.code, 0, dec.decode(version.stderr));
      const info = JSON.parse(dec.decode(version.stdout));
      assertEquals(info.protocol, 1);
      assertEquals(info.deno, Deno.version.deno);
      // An Iroh key is made by the native addon, which compile must have embedded.
      const key = await bare(["key", "generate", "--file", `${dir}/host/key`, "--json"]);
      assertEquals(key.code, 0, dec.decode(key.stderr));
      assert(/^[0-9a-f]{64}$/.test(JSON.parse(dec.decode(key.stdout)).endpointId));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("deno task compile refuses the full deno as DENORT_BIN and points to denort or the package", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blixard-compile-" });
  try {
    const r = await compile(`${root}node_modules/deno/deno`, `${dir}/blixard`);
    assertEquals(r.code, 1);
    assert(r.stderr.includes("node_modules/deno/deno is the full deno (deno "), r.stderr);
    assert(r.stderr.includes("would only open a REPL"), r.stderr);
    assert(r.stderr.includes(`Use denort ${Deno.version.deno}`), r.stderr);
    assert(r.stderr.includes("deno task package"), r.stderr);
    assertEquals([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task compile names a DENORT_BIN that does not exist", async () => {
  const r = await compile("/nonexistent/denort", "/nonexistent/blixard");
  assertEquals(r.code, 1);
  assertEquals(r.stderr, "compile: DENORT_BIN=/nonexistent/denort: no such file\n");
});
