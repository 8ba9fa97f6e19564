/**
 * What the subcommands share: a usage error type, exit codes, output in
 * human or JSON form, and where the operator's key lives.
 *
 * Owns: {@link CliError}, {@link ExitCode}, {@link Command} and the dispatch
 * of a command's subcommands, {@link operatorKeyPath}. Imports nothing of the
 * project.
 *
 * @module
 */

import { isAbsolute, join } from "node:path";

/** Exit statuses of the command line. */
export const ExitCode = {
  Ok: 0,
  /** The command failed (the node said no, could not be reached, bad config). */
  Failure: 1,
  /** The command line itself was wrong. */
  Usage: 2,
} as const;

/** A failure the command line reports as one line on stderr, with an exit status. */
export class CliError extends Error {
  override readonly name = "CliError";
  readonly exitCode: number;
  constructor(message: string, exitCode: number = ExitCode.Failure) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** A usage error: exit status 2 and a pointer to the help. */
export function usage(command: string, message: string): CliError {
  return new CliError(`${message}\nTry 'blixard ${command} --help'.`, ExitCode.Usage);
}

/** `parseArgs` options: each option's type, and its short letter if any. */
export type OptionSpecs = Readonly<
  Record<string, { readonly type: string; readonly short?: string }>
>;

/** A subcommand of a command (`meta put`): its help, its options, how it runs. */
export interface Subcommand {
  readonly help: string;
  readonly options: OptionSpecs;
  readonly run: (args: string[]) => Promise<number>;
}

/**
 * A command: its help text, its options (as `parseArgs` takes them) and how
 * it runs. A command with `subcommands` (`meta`, `cluster`) has an overview
 * as its help and no options of its own; each subcommand has its own.
 */
export interface Command {
  readonly help: string;
  readonly options: OptionSpecs;
  readonly run: (args: string[]) => Promise<number>;
  readonly subcommands?: Readonly<Record<string, Subcommand>>;
}

/** A command made of `subcommands`, with `help` as its overview. */
export function withSubcommands(
  name: string,
  help: string,
  subcommands: Readonly<Record<string, Subcommand>>,
): Command {
  return {
    help,
    options: {},
    subcommands,
    run(args) {
      const [first, ...rest] = args;
      if (first === undefined || first === "--help" || first === "-h") {
        console.log(help);
        return Promise.resolve(ExitCode.Ok);
      }
      const sub = Object.hasOwn(subcommands, first) ? subcommands[first] : undefined;
      if (!sub) {
        const names = Object.keys(subcommands);
        throw usage(
          name,
          `unknown ${name} command "${first}": expected ${names.slice(0, -1).join(", ")} or ${
            names.at(-1)
          }`,
        );
      }
      return sub.run(rest);
    },
  };
}

/**
 * Prints `value` as one line of JSON. Callers pass plain JSON values with
 * camelCase keys (protobuf messages through `toJson`, see docs/cli.md).
 */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value));
}

/**
 * Where operator commands keep their Iroh key: `$BLIXARD_OPERATOR_KEY`, else
 * `$XDG_CONFIG_HOME/blixard/operator_key`, else `~/.config/blixard/operator_key`.
 * An empty variable counts as unset, and so does a relative
 * `XDG_CONFIG_HOME`: the XDG Base Directory spec says both are to be ignored,
 * and either would put the key wherever the command happens to run.
 */
export function operatorKeyPath(): string {
  const explicit = Deno.env.get("BLIXARD_OPERATOR_KEY");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  const config = xdg && isAbsolute(xdg) ? xdg : join(Deno.env.get("HOME") || ".", ".config");
  return join(config, "blixard", "operator_key");
}

/** `3h 12m 5s` from milliseconds. */
export function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [
    Math.floor(s / 60) % 60,
    "m",
  ], [s % 60, "s"]] as const;
  const shown = parts.filter(([n], i) => n > 0 || i === parts.length - 1);
  return shown.map(([n, u]) => `${n}${u}`).join(" ");
}
