/**
 * Waiting on a handler without being held by it: the servers of both
 * transports stop waiting for a call the moment its signal aborts (deadline,
 * cancel, shutdown), whether or not the handler noticed.
 *
 * Owns: {@link untilAborted}. Imports nothing.
 *
 * @module
 */

/** Rejects when `signal` aborts, with its reason; else settles as `promise` does. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
