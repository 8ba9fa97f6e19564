/**
 * `blixard meta get|put|del|cas|list`: the cluster's metadata namespace
 * (proto/blixard/v1/metadata.proto) from the command line.
 *
 * Owns: the meta subcommands, their output (human and JSON, docs/cli.md),
 * reading a value from a file or stdin within the value limit, and the
 * request id every write carries. Imports the Metadata service declaration
 * and messages, the state machine's key, value and request id rules (so the
 * command line refuses what every node would), and this folder's target and
 * common modules.
 *
 * @module
 */

import { createClient } from "../rpc/client.ts";
import type { Client } from "../rpc/services.ts";
import { Code, RpcError } from "../rpc/errors.ts";
import {
  CompareAndSetMetadataResponseSchema,
  DeleteMetadataResponseSchema,
  GetMetadataResponseSchema,
  ListMetadataResponseSchema,
  type MetadataEntry,
  type MetadataService,
  PutMetadataResponseSchema,
} from "../rpc/gen/blixard/v1/metadata_pb.ts";
import { Metadata } from "../rpc/services.ts";
import { METADATA_LIMITS, metadataKeyProblem, requestIdProblem } from "../state/cluster_state.ts";
import {
  CliError,
  ExitCode,
  type OptionSpecs,
  printJson,
  type Subcommand,
  usage,
  withSubcommands,
} from "./common.ts";
import {
  callFailed,
  clientSubcommand,
  protoJson,
  TARGET_OPTIONS,
  targetHelp,
  type TargetValues,
} from "./target.ts";

const READ_OPTIONS = {
  ...TARGET_OPTIONS,
  timeout: { type: "string", default: "5000" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const WRITE_OPTIONS = {
  ...READ_OPTIONS,
  "request-id": { type: "string" },
  verbose: { type: "boolean", short: "v" },
} as const;

const VALUE_OPTIONS = { ...WRITE_OPTIONS, "value-file": { type: "string" } } as const;

const GET_OPTIONS = READ_OPTIONS;
const PUT_OPTIONS = VALUE_OPTIONS;
const DEL_OPTIONS = WRITE_OPTIONS;
const CAS_OPTIONS = { ...VALUE_OPTIONS, expect: { type: "string" } } as const;
const LIST_OPTIONS = { ...READ_OPTIONS, limit: { type: "string" } } as const;

const TARGET_HELP = targetHelp(
  "any member",
  "how long to wait for the answer (default 5000)",
  "Reaching the cluster:",
);

const MAX_VALUE = `${METADATA_LIMITS.maxValueBytes} bytes (64 KiB) of UTF-8`;

const WRITE_HELP =
  `  --request-id ID  the write's idempotency key, 1 to ${METADATA_LIMITS.maxRequestIdBytes} printable ASCII
                   characters: a write whose id the cluster applied already
                   is answered with its first result, not applied again
                   (default: a new random id)
  -v, --verbose    print the request id on stderr`;

const VALUE_HELP = `VALUE is the value itself, or - to read it from stdin; --value-file F reads
it from F. A value is at most ${MAX_VALUE}.`;

const GET_HELP = `Usage: blixard meta get KEY (--ticket T | --addr A) [options]

Prints KEY's value and revision (the Raft log index of the write that last
changed it). The read is linearizable: it sees every write acknowledged
before it started, on whichever member answers. The exit status is 1 when
the key does not exist.

Options:
  --json         print the GetMetadataResponse as JSON (docs/cli.md)

${TARGET_HELP}`;

const PUT_HELP = `Usage: blixard meta put KEY (VALUE | - | --value-file F) (--ticket T | --addr A)
                        [options]

Sets KEY to VALUE, creating it if missing, and prints its new revision once
the write is committed.

${VALUE_HELP}

Options:
  --value-file F   read the value from F
${WRITE_HELP}
  --json           print the PutMetadataResponse as JSON (docs/cli.md)

${TARGET_HELP}`;

const DEL_HELP = `Usage: blixard meta del KEY (--ticket T | --addr A) [options]

Removes KEY once the removal is committed, and says whether it existed.
Removing a key that does not exist succeeds (exit status 0).

Options:
${WRITE_HELP}
  --json           print the DeleteMetadataResponse as JSON (docs/cli.md)

${TARGET_HELP}`;

const CAS_HELP = `Usage: blixard meta cas KEY --expect REV (VALUE | - | --value-file F)
                        (--ticket T | --addr A) [options]

Compare-and-set: sets KEY to VALUE only if its revision is REV (0: only if
KEY does not exist), and prints the new revision. At another revision,
nothing is written, the current revision is printed on stderr and the exit
status is 1.

${VALUE_HELP}

Options:
  --expect REV     the revision KEY must have; 0 for "does not exist"
  --value-file F   read the value from F
${WRITE_HELP}
  --json           print the CompareAndSetMetadataResponse as JSON
                   (docs/cli.md)

${TARGET_HELP}`;

const LIST_HELP = `Usage: blixard meta list [PREFIX] (--ticket T | --addr A) [options]

Prints the keys that start with PREFIX (every key without it), in key
order, one line each with its value and revision. The read is linearizable.

Options:
  --limit N      at most N keys, 1 to ${METADATA_LIMITS.maxListEntries} (default ${METADATA_LIMITS.maxListEntries}); when more
                 match, stderr says so
  --json         print the ListMetadataResponse as JSON (docs/cli.md)

${TARGET_HELP}`;

const HELP = `Usage: blixard meta get|put|del|cas|list ... (--ticket T | --addr A)

The cluster's metadata: a small replicated key-value namespace for
operators' labels and annotations. Any member answers; writes are committed
through Raft before they are answered, reads are linearizable.

Commands:
  get KEY                     a key's value and revision
  put KEY VALUE               set a key
  del KEY                     remove a key
  cas KEY --expect REV VALUE  set a key only if its revision is REV
  list [PREFIX]               the keys with a prefix, in key order

A key is 1 to ${METADATA_LIMITS.maxKeyBytes} bytes of UTF-8 without control characters; a
value at most ${MAX_VALUE}.
'blixard meta COMMAND -h' for a command's options.`;

/** `blixard meta`. */
export const META_COMMAND = withSubcommands("meta", HELP, {
  get: subcommand("get", GET_HELP, GET_OPTIONS, getCommand),
  put: subcommand("put", PUT_HELP, PUT_OPTIONS, putCommand),
  del: subcommand("del", DEL_HELP, DEL_OPTIONS, delCommand),
  cas: subcommand("cas", CAS_HELP, CAS_OPTIONS, casCommand),
  list: subcommand("list", LIST_HELP, LIST_OPTIONS, listCommand),
});

/** The parsed options of any meta subcommand (each has a subset). */
interface MetaValues extends TargetValues {
  timeout?: string;
  json?: boolean;
  help?: boolean;
  "request-id"?: string;
  verbose?: boolean;
  "value-file"?: string;
  expect?: string;
  limit?: string;
}

/** The checked arguments of a meta subcommand, and the node to call. */
interface Call {
  readonly name: string;
  readonly json: boolean;
  readonly client: Client<typeof MetadataService>;
  readonly deadlineMs: number;
  /** KEY, or list's PREFIX ("" for all). */
  readonly key: string;
  /** For writes: the request id, given or new. */
  readonly requestId: string;
  /** For put and cas. */
  readonly value: string;
  /** For cas. */
  readonly expectedRevision: bigint;
  /** For list: 0 for the service's default. */
  readonly limit: number;
}

/** A meta subcommand: checks its arguments, then calls the member. */
function subcommand(
  sub: string,
  help: string,
  options: OptionSpecs,
  run: (call: Call) => Promise<number>,
): Subcommand {
  const name = `meta ${sub}`;
  return clientSubcommand<MetaValues>(name, help, options, true, async (r) => {
    // Everything the command line can check is checked before a node is called.
    const checked = await check(name, r.values, r.positionals);
    const target = await r.dialer.member();
    const client = createClient(Metadata, target.channel);
    try {
      return await run({
        ...checked,
        name,
        json: r.values.json ?? false,
        client,
        deadlineMs: r.timeoutMs,
      });
    } catch (e) {
      throw callFailed(name, e, target, retryAdvice(e, checked.requestId));
    }
  });
}

type Checked = Pick<Call, "key" | "requestId" | "value" | "expectedRevision" | "limit">;

/** The arguments of meta `name`, checked as every node would check them; usage errors. */
async function check(
  name: string,
  values: MetaValues,
  positionals: readonly string[],
): Promise<Checked> {
  const sub = name.slice("meta ".length);
  const checked = { key: "", requestId: "", value: "", expectedRevision: 0n, limit: 0 };
  const [key, ...rest] = positionals;
  if (sub === "list") {
    if (rest.length > 0) {
      throw usage(name, `${name}: expected at most one PREFIX, got ${positionals.length}`);
    }
    const prefix = key ?? "";
    const problem = prefix === "" ? null : metadataKeyProblem(prefix);
    if (problem) throw usage(name, `${name}: PREFIX: ${problem}`);
    return { ...checked, key: prefix, limit: listLimit(name, values.limit) };
  }
  if (key === undefined) throw usage(name, `${name}: KEY is required`);
  const problem = metadataKeyProblem(key);
  if (problem) throw usage(name, `${name}: ${problem}`);
  const takesValue = sub === "put" || sub === "cas";
  const allowed = takesValue && values["value-file"] === undefined ? 1 : 0;
  if (rest.length > allowed) {
    throw usage(
      name,
      `${name}: unexpected argument ${JSON.stringify(rest[allowed])}` +
        (takesValue ? ": give the value once: VALUE, - (stdin) or --value-file F" : ""),
    );
  }
  if (sub === "get") return { ...checked, key };
  const requestId = values["request-id"] ?? crypto.randomUUID();
  const bad = requestIdProblem(requestId);
  if (bad) throw usage(name, `${name}: --request-id: ${bad}`);
  if (values.verbose) console.error(`request id: ${requestId}`);
  if (sub === "del") return { ...checked, key, requestId };
  const expectedRevision = sub === "cas" ? casExpected(name, values.expect) : 0n;
  const value = await valueOf(name, rest[0], values["value-file"]);
  return { ...checked, key, requestId, value, expectedRevision };
}

/** `--expect REV` as a revision, or a usage error. */
function casExpected(name: string, expect: string | undefined): bigint {
  if (expect === undefined) {
    throw usage(name, `${name}: --expect REV is required (0 for "the key does not exist")`);
  }
  if (!/^\d{1,16}$/.test(expect) || Number(expect) > Number.MAX_SAFE_INTEGER) {
    throw usage(name, `${name}: --expect ${expect}: expected a revision, 0 to 2^53-1`);
  }
  return BigInt(expect);
}

/** `--limit N`, or 0 (the service's default) when not given. */
function listLimit(name: string, text: string | undefined): number {
  if (text === undefined) return 0;
  const limit = Number(text);
  const max = METADATA_LIMITS.maxListEntries;
  if (!/^\d+$/.test(text) || limit < 1 || limit > max) {
    throw usage(name, `${name}: --limit ${text}: expected 1 to ${max}`);
  }
  return limit;
}

/** The value of put or cas: VALUE, stdin (`-`) or `--value-file`, within the limit. */
async function valueOf(
  name: string,
  given: string | undefined,
  file: string | undefined,
): Promise<string> {
  if (given !== undefined && given !== "-") {
    const bytes = new TextEncoder().encode(given).length;
    if (bytes > METADATA_LIMITS.maxValueBytes) {
      throw usage(name, `${name}: VALUE is ${bytes} bytes; a value is at most ${MAX_VALUE}`);
    }
    return given;
  }
  if (given === undefined && file === undefined) {
    throw usage(name, `${name}: VALUE is required (or - for stdin, or --value-file F)`);
  }
  const source = file ?? "stdin";
  let readable: ReadableStream<Uint8Array>;
  if (file === undefined) {
    readable = Deno.stdin.readable;
  } else {
    try {
      readable = (await Deno.open(file)).readable;
    } catch (e) {
      throw new CliError(`${name}: --value-file ${file}: ${(e as Error).message}`);
    }
  }
  const bytes = await readAtMost(readable, METADATA_LIMITS.maxValueBytes);
  if (bytes === null) {
    throw usage(
      name,
      `${name}: the value in ${source} is over the limit: a value is at most ${MAX_VALUE}`,
    );
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw usage(
      name,
      `${name}: the value in ${source} is not UTF-8 text; values are UTF-8 strings`,
    );
  }
}

/** The whole stream if it is at most `maxBytes` long, else null; never holds more than that. */
async function readAtMost(
  readable: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<Uint8Array | null> {
  const buffer = new Uint8Array(maxBytes);
  let length = 0;
  const reader = readable.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return buffer.slice(0, length);
      if (length + value.length > maxBytes) return null;
      buffer.set(value, length);
      length += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** What to do after a write failed: retry with the same request id, when that helps. */
function retryAdvice(e: unknown, requestId: string): string {
  if (!(e instanceof RpcError) || requestId === "") return "";
  const again = `run the same command with --request-id ${requestId}`;
  switch (e.code) {
    case Code.UNKNOWN:
    case Code.DEADLINE_EXCEEDED:
    case Code.CANCELLED:
    case Code.INTERNAL:
      return `\n  the outcome is unknown: ${again} to learn it (a request id is applied at most once)`;
    case Code.UNAVAILABLE:
    case Code.ABORTED:
      return `\n  it may be retried: ${again}, so that it is applied at most once`;
    default:
      return "";
  }
}

/** `k = "v" (revision 12)`: one line, whatever the value holds. */
function entryLine(entry: MetadataEntry): string {
  return `${entry.key} = ${JSON.stringify(entry.value)} (revision ${entry.revision})`;
}

async function getCommand(call: Call): Promise<number> {
  const res = await call.client.get({ key: call.key }, { deadlineMs: call.deadlineMs });
  if (call.json) printJson(protoJson(GetMetadataResponseSchema, res));
  else if (res.entry) console.log(entryLine(res.entry));
  else console.error(`blixard: ${call.name}: ${JSON.stringify(call.key)} not found`);
  return res.found ? ExitCode.Ok : ExitCode.Failure;
}

async function putCommand(call: Call): Promise<number> {
  const { key, value, requestId } = call;
  const res = await call.client.put({ key, value, requestId }, { deadlineMs: call.deadlineMs });
  if (call.json) printJson(protoJson(PutMetadataResponseSchema, res));
  else console.log(`${key}: revision ${res.revision}`);
  return ExitCode.Ok;
}

async function delCommand(call: Call): Promise<number> {
  const { key, requestId } = call;
  const res = await call.client.delete({ key, requestId }, { deadlineMs: call.deadlineMs });
  if (call.json) printJson(protoJson(DeleteMetadataResponseSchema, res));
  else console.log(res.existed ? `${key}: deleted` : `${key}: did not exist; nothing deleted`);
  return ExitCode.Ok;
}

async function casCommand(call: Call): Promise<number> {
  const { key, value, requestId, expectedRevision } = call;
  const res = await call.client.compareAndSet(
    { key, expectedRevision, value, requestId },
    { deadlineMs: call.deadlineMs },
  );
  if (call.json) {
    printJson(protoJson(CompareAndSetMetadataResponseSchema, res));
  } else if (res.succeeded) {
    console.log(`${key}: revision ${res.revision}`);
  } else {
    const now = res.revision === 0n ? "does not exist" : `is at revision ${res.revision}`;
    console.error(
      `blixard: ${call.name}: ${key} ${now} (--expect ${expectedRevision}): nothing was written`,
    );
  }
  return res.succeeded ? ExitCode.Ok : ExitCode.Failure;
}

async function listCommand(call: Call): Promise<number> {
  const { key: prefix, limit } = call;
  const res = await call.client.list({ prefix, limit }, { deadlineMs: call.deadlineMs });
  if (call.json) {
    printJson(protoJson(ListMetadataResponseSchema, res));
    return ExitCode.Ok;
  }
  for (const entry of res.entries) console.log(entryLine(entry));
  const which = prefix === "" ? "keys" : `keys starting with ${JSON.stringify(prefix)}`;
  if (res.entries.length === 0) console.error(`no ${which}`);
  if (res.truncated) {
    console.error(
      `more ${which} than the ${res.entries.length} shown: raise --limit (at most ${METADATA_LIMITS.maxListEntries}) or narrow the prefix`,
    );
  }
  return ExitCode.Ok;
}
