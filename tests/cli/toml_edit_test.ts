/**
 * The TOML section rewriter `blixard migrate` writes config files with: it
 * changes the values and tables it is asked to and nothing else, byte for
 * byte, and refuses the forms it cannot rewrite rather than guess.
 */

import fc from "fast-check";
import { parse, stringify } from "smol-toml";
import { assert, assertEquals, thrown } from "../assert.ts";
import { lexToml, removeTable, setTableKeys, TomlEditError } from "../../src/cli/toml_edit.ts";

const MODE: [string, string][] = [["mode", '"dual"']];

Deno.test("a value is replaced in place: the key's spacing, its comment and every other line stay", () => {
  const text =
    `# the operator's notes\n[node]\nid = 1\n\n[transport]\n# why\n  mode   =   "grpc"   # baseline\n\n[grpc]\nbind = "127.0.0.1:7400"\n`;
  assertEquals(
    setTableKeys(text, ["transport"], MODE),
    text.replace('"grpc"   # baseline', '"dual"   # baseline'),
  );
});

Deno.test("a multi-line array with comments inside becomes the one-line value; the comment after it stays", () => {
  const text =
    `[transport.migration]\nprefer_iroh = [\n  "health", # first\n  "status",\n] # the canary's\nraft_transport = "grpc"\n`;
  assertEquals(
    setTableKeys(text, ["transport", "migration"], [["prefer_iroh", '["all_except_raft"]']]),
    `[transport.migration]\nprefer_iroh = ["all_except_raft"] # the canary's\nraft_transport = "grpc"\n`,
  );
});

Deno.test("a missing key is appended after the table's last key with its indentation, before the comments that follow", () => {
  const text = `[transport.migration]\n  prefer_iroh = ["health"]\n# about [grpc]\n[grpc]\n`;
  assertEquals(
    setTableKeys(text, ["transport", "migration"], [["raft_transport", '"grpc"'], [
      "fallback_to_grpc",
      "true",
    ]]),
    `[transport.migration]\n  prefer_iroh = ["health"]\n  raft_transport = "grpc"\n  fallback_to_grpc = true\n# about [grpc]\n[grpc]\n`,
  );
});

Deno.test("a missing table goes where it is asked: after [node], or before the table that needs it", () => {
  const text = `[node]\nid = 1\n\n[grpc]\nbind = "127.0.0.1:7400"\n`;
  assertEquals(
    setTableKeys(text, ["transport"], MODE, { after: [["node"]] }),
    `[node]\nid = 1\n\n[transport]\nmode = "dual"\n\n[grpc]\nbind = "127.0.0.1:7400"\n`,
  );
  const implied =
    `[node]\nid = 1\n\n# the canary\n[transport.migration]\nprefer_iroh = ["health"]\n`;
  assertEquals(
    setTableKeys(implied, ["transport"], MODE, {
      before: [["transport", "migration"]],
      after: [["node"]],
    }),
    `[node]\nid = 1\n\n[transport]\nmode = "dual"\n\n# the canary\n[transport.migration]\nprefer_iroh = ["health"]\n`,
  );
  assertEquals(
    setTableKeys(`id = 1`, ["transport"], MODE),
    `id = 1\n\n[transport]\nmode = "dual"\n`,
  );
  assertEquals(setTableKeys(``, ["transport"], MODE), `[transport]\nmode = "dual"\n`);
});

Deno.test("a file with CRLF line endings gets CRLF lines, and a last line without a newline gets one before what follows", () => {
  const text = `[node]\r\nid = 1\r\n\r\n[transport]\r\nmode = "grpc"`;
  const out = setTableKeys(text, ["transport", "migration"], [["raft_transport", '"grpc"']], {
    after: [["transport"]],
  });
  assertEquals(
    out,
    `[node]\r\nid = 1\r\n\r\n[transport]\r\nmode = "grpc"\r\n\r\n[transport.migration]\r\nraft_transport = "grpc"\r\n`,
  );
  assert(!/[^\r]\n/.test(out), "a bare LF was written");
});

Deno.test("quoted keys and spaced headers are the same table and key", () => {
  const text =
    `[ transport ]\n"mode" = 'grpc'\n[ "transport" . migration ]\nraft_transport = "grpc"\n`;
  assertEquals(
    setTableKeys(text, ["transport"], MODE),
    `[ transport ]\n"mode" = "dual"\n[ "transport" . migration ]\nraft_transport = "grpc"\n`,
  );
  assertEquals(removeTable(text, ["transport", "migration"]), `[ transport ]\n"mode" = 'grpc'\n`);
});

Deno.test("removing a table takes its header, the comments right above it and its keys; a comment after its last key and the rest stay", () => {
  const text =
    `[transport]\nmode = "dual"\n\n# which services prefer Iroh\n[transport.migration]\n# inside\nprefer_iroh = ["health"]\nraft_transport = "grpc"\n# about [grpc], after the last key\n\n[grpc]\nbind = "127.0.0.1:7400"\n`;
  assertEquals(
    removeTable(text, ["transport", "migration"]),
    `[transport]\nmode = "dual"\n\n# about [grpc], after the last key\n\n[grpc]\nbind = "127.0.0.1:7400"\n`,
  );
  const blankBoth = `[a]\nx = 1\n\n[transport.migration]\ny = 2\n\n[b]\nz = 3\n`;
  assertEquals(removeTable(blankBoth, ["transport", "migration"]), `[a]\nx = 1\n\n[b]\nz = 3\n`);
  assertEquals(removeTable(`[a]\nx = 1\n`, ["transport", "migration"]), `[a]\nx = 1\n`);
});

Deno.test("lines inside multi-line strings and nested arrays that look like headers are not headers", () => {
  const text =
    `[other]\nnote = """\n[transport]\nmode = "iroh"\n"""\nliteral = '''\n[transport.migration]'''\ngrid = [\n[1, 2],\n[3],\n]\n\n[transport]\nmode = "grpc"\n`;
  const out = setTableKeys(text, ["transport"], MODE);
  assertEquals(out, text.replace('mode = "grpc"', 'mode = "dual"'));
  assertEquals(lexToml(text).filter((s) => s.kind === "table").length, 2);
});

Deno.test("forms the rewriter cannot edit are refused with the line and what to write instead", () => {
  const cases: [string, readonly string[], RegExp][] = [
    [
      `transport = { mode = "dual" }\n`,
      ["transport"],
      /line 1: "transport = \.\.\." writes \[transport\] as an inline table/,
    ],
    [
      `transport.mode = "dual"\n[node]\n`,
      ["transport"],
      /line 1: "transport\.mode = \.\.\." writes \[transport\] as dotted keys/,
    ],
    [
      `[transport]\nmode = "dual"\nmigration.prefer_iroh = ["health"]\n`,
      ["transport", "migration"],
      /line 3: .* writes \[transport\.migration\] as dotted keys; write it as a \[transport\.migration\] table/,
    ],
    [
      `[transport]\nmigration = { prefer_iroh = ["health"] }\n`,
      ["transport", "migration"],
      /line 2: .* writes \[transport\.migration\] as an inline table/,
    ],
  ];
  for (const [text, path, message] of cases) {
    const e = thrown(TomlEditError, () => setTableKeys(text, path, MODE));
    assertEquals(e.code, "unsupported_form");
    assert(message.test(e.message), e.message);
    assertEquals(thrown(TomlEditError, () => removeTable(text, path)).code, "unsupported_form");
  }
});

// Any document smol-toml writes, with a key set in any of its tables (or a new
// one), reads back as that document with that key set; removing a table
// removes its own keys and nothing else.
const scalar = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.boolean(),
  fc.array(fc.string({ maxLength: 6 }), { maxLength: 4 }),
);
const key = fc.stringMatching(/^[a-z][a-z_]{0,7}$/);
const table = fc.dictionary(key, scalar, { maxKeys: 4 });
/** A parsed document as plain objects (smol-toml's have no prototype). */
const plain = (text: string) => JSON.parse(JSON.stringify(parse(text)));
const doc = fc.dictionary(key, fc.oneof(scalar, table, fc.dictionary(key, table, { maxKeys: 2 })), {
  maxKeys: 5,
});

Deno.test("setting a key in any table of a generated document changes exactly that key", () => {
  fc.assert(
    fc.property(doc, key, key, fc.string({ maxLength: 10 }), (d, t, k, v) => {
      const text = stringify(d);
      const tablePath = typeof d[t] === "object" && !Array.isArray(d[t]) ? [t] : ["fresh_table"];
      const out = setTableKeys(text, tablePath, [[k, JSON.stringify(v)]]);
      const want = structuredClone(d) as Record<string, Record<string, unknown>>;
      want[tablePath[0]!] = { ...(want[tablePath[0]!] ?? {}), [k]: v };
      assertEquals(plain(out), want);
    }),
    { numRuns: 300 },
  );
});

Deno.test("removing any table of a generated document removes its own keys and nothing else", () => {
  fc.assert(
    fc.property(doc, (d) => {
      const tables = Object.keys(d).filter((k) => typeof d[k] === "object" && !Array.isArray(d[k]));
      fc.pre(tables.length > 0);
      const t = tables[0]!;
      const out = removeTable(stringify(d), [t]);
      const want = structuredClone(d) as Record<string, unknown>;
      const sub = Object.entries(want[t] as Record<string, unknown>).filter(([, v]) =>
        typeof v === "object" && v !== null && !Array.isArray(v)
      );
      if (sub.length > 0) want[t] = Object.fromEntries(sub);
      else delete want[t];
      assertEquals(plain(out), want);
    }),
    { numRuns: 300 },
  );
});
