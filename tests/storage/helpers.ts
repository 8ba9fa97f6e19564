/**
 * Test setup for the SQLite Raft log: a temporary directory per test and a
 * `LogStorageSubject` for the contract.
 */

import { SqliteLogStorage } from "../../src/storage/raft_log.ts";
import type { LogStorageSubject } from "./contract.ts";

/** A temporary directory removed on dispose. */
export function tempDir(): Disposable & { readonly path: string } {
  const path = Deno.makeTempDirSync({ prefix: "blixard-raft-log-" });
  return { path, [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }) };
}

/** A fresh SQLite log in its own temporary directory, for the contract. */
export function sqliteSubject(): LogStorageSubject {
  const dir = tempDir();
  const file = `${dir.path}/raft.db`;
  let storage = SqliteLogStorage.open(file);
  return {
    get storage() {
      return storage;
    },
    reopen() {
      storage.close();
      storage = SqliteLogStorage.open(file);
    },
    [Symbol.dispose]() {
      storage.close();
      dir[Symbol.dispose]();
    },
  };
}
