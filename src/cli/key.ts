/**
 * `blixard key generate|show`: the Iroh identity of a node or an operator.
 *
 * Owns: the key subcommands. Imports the Iroh key and ticket helpers.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname } from "node:path";
import { toTicket } from "../transport/iroh/endpoint.ts";
import {
  endpointIdOf,
  loadOrCreateSecretKey,
  readSecretKeyFile,
} from "../transport/iroh/secret_key.ts";
import { CliError, ExitCode, operatorKeyPath, printJson, usage } from "./common.ts";

/** The options of `blixard key`. */
export const KEY_OPTIONS = {
  file: { type: "string" },
  addr: { type: "string", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

export const KEY_HELP = `Usage: blixard key generate [--file PATH] [--json]
       blixard key show [--file PATH] [--addr HOST:PORT]... [--json]

The Iroh identity: an Ed25519 secret key in a file (mode 0600, 64 hex
characters), whose public key is the endpoint id peers allow and dial.

  generate   create the key file; refuses to replace an existing one (that
             would change the endpoint id every peer has on its allowlist)
  show       print the endpoint id, and a ticket when addresses are given

Options:
  --file PATH   the key file (default: the operator key, ${operatorKeyPath()};
                for a node, <data_dir>/iroh_secret_key)
  --addr A      an address the endpoint listens on, for the ticket (repeatable)
  --json        print {"file", "endpointId", "ticket"} as JSON (docs/cli.md)`;

/** Runs `blixard key ...`. */
export async function keyCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: KEY_OPTIONS,
  });
  const sub = positionals[0];
  if (values.help || sub === undefined) {
    console.log(KEY_HELP);
    return sub === undefined && !values.help ? ExitCode.Usage : ExitCode.Ok;
  }
  const file = values.file ?? operatorKeyPath();
  switch (sub) {
    case "generate": {
      await Deno.mkdir(dirname(file), { recursive: true, mode: 0o700 });
      const { secretKey, created } = await loadOrCreateSecretKey(file);
      if (!created) {
        throw new CliError(
          `key file ${file} already exists (endpoint id ${endpointIdOf(secretKey)}); ` +
            `refusing to replace it: every peer knows this node by that id`,
        );
      }
      report(file, endpointIdOf(secretKey), values.addr ?? [], values.json, "created");
      return ExitCode.Ok;
    }
    case "show": {
      const secretKey = await readSecretKeyFile(file);
      report(file, endpointIdOf(secretKey), values.addr ?? [], values.json);
      return ExitCode.Ok;
    }
    default:
      throw usage("key", `unknown key command "${sub}": expected generate or show`);
  }
}

function report(file: string, id: string, addrs: string[], json = false, verb?: string): void {
  const ticket = addrs.length > 0 ? toTicket({ id, directAddresses: addrs }) : null;
  if (json) {
    printJson({ file, endpointId: id, ticket });
    return;
  }
  if (verb) console.error(`${verb} ${file} (mode 0600)`);
  console.log(`endpoint id: ${id}`);
  if (ticket) console.log(`ticket:      ${ticket}`);
}
