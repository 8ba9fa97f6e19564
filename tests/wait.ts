/**
 * Bounded waits for tests: nothing a test waits on may hang it.
 */

/** Fails with `what` if `promise` does not settle within `ms`; never leaves a timer behind. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `check()` holds, polling every 10 ms; fails naming `what` after `ms`. */
export async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms = 3000,
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Reads a child's stdout until a line matches `pattern`; resolves with the
 * first capture group. Keeps draining afterwards so the child never blocks on
 * a full pipe. Rejects, naming `what`, if the stream ends first.
 */
export async function firstMatch(
  stdout: ReadableStream<Uint8Array>,
  pattern: RegExp,
  what: string,
): Promise<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  const reader = stdout.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${what}: the process exited first; it printed: ${buffered}`);
      buffered += decoder.decode(value, { stream: true });
      const match = pattern.exec(buffered);
      if (match !== null) return match[1]!;
    }
  } finally {
    reader.releaseLock();
    void stdout.pipeTo(new WritableStream()).catch(() => {});
  }
}
