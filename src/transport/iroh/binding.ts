/**
 * The one place that loads the Iroh napi binding (`@number0/iroh`).
 *
 * Owns: the binding import, the process-wide fix for its slow errors, and
 * turning its Rust-formatted error text into one readable line. Imports
 * nothing of Blixard.
 *
 * Why the environment is touched: the binding wraps every error in `anyhow`,
 * which captures a stack backtrace whenever `RUST_BACKTRACE` or
 * `RUST_LIB_BACKTRACE` is set, and the binding then formats it with symbols.
 * Measured here with `RUST_BACKTRACE=1`, that made every failing call (a read
 * on a closed connection, a refused handshake) take ~60 ms and fill the error
 * with a 20-line trace. `RUST_LIB_BACKTRACE=0` turns off only these library
 * backtraces (panics still honour `RUST_BACKTRACE`); std reads it once, at the
 * first capture, so setting it when this module loads is early enough. An
 * explicit `RUST_LIB_BACKTRACE` from the operator is left alone.
 *
 * @module
 */

import iroh from "@number0/iroh";

export type {
  BiStream as RawBiStream,
  Connection as RawConnection,
  Endpoint as RawEndpoint,
  IncomingAddr as RawIncomingAddr,
  RecvStream as RawRecvStream,
  SendStream as RawSendStream,
} from "@number0/iroh";

/** The binding's classes and functions (CommonJS default export). */
export const binding: typeof iroh = iroh;

quietLibraryBacktraces();

function quietLibraryBacktraces(): void {
  try {
    if (Deno.env.get("RUST_LIB_BACKTRACE") === undefined) {
      Deno.env.set("RUST_LIB_BACKTRACE", "0");
    }
  } catch {
    // Without --allow-env the fix is skipped: errors are slower, never wrong.
  }
}

/**
 * The binding's error text as one line: the backtrace dropped, source
 * locations (`(/root/.cargo/…/endpoint.rs:1060:20)`) dropped, and the
 * "Caused by:" chain joined with `": "`.
 *
 * @example
 * ```ts
 * bindingErrorText(new Error("ConnectError::Connecting (/x.rs:1:2)\nCaused by:\n    timed out"));
 * // "ConnectError::Connecting: timed out"
 * ```
 */
export function bindingErrorText(error: unknown): string {
  let text = error instanceof Error ? error.message : String(error);
  const trace = text.indexOf("Stack backtrace:");
  if (trace >= 0) text = text.slice(0, trace);
  return text
    .split("\n")
    .map((line) => line.replace(/\s*\([^()]*\.rs:\d+:\d+\)\s*$/, "").trim())
    .filter((line, i, all) => line !== "" && line !== "Caused by:" && all.indexOf(line) === i)
    .join(": ");
}
