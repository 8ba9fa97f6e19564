/**
 * docs/configuration.md is generated from the schema; this runs the
 * generator's check, so a schema change without `config_docs.ts gen` fails.
 */

import { assert, assertEquals } from "../assert.ts";
import { configSchema } from "../../src/config/schema.ts";
import { keyPaths, schemaAt, tableKeys } from "../../src/config/introspect.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("docs/configuration.md matches the schema", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/config_docs.ts", "check"],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  assertEquals(code, 0, new TextDecoder().decode(stderr));
});

Deno.test("docs/configuration.md has an entry for every key", async () => {
  const doc = await Deno.readTextFile(`${ROOT}docs/configuration.md`);
  for (const path of keyPaths(configSchema)) {
    const name = path.join(".");
    const schema = schemaAt(configSchema, path)!;
    const heading = tableKeys(schema) !== undefined
      ? `## [${name}]`
      : tableKeys(schemaAt(schema, [0]) ?? schema) !== undefined
      ? `## [[${name}]]`
      : `### \`${name}\``;
    assert(doc.includes(heading), `docs/configuration.md lacks ${heading}`);
  }
});
