/**
 * The `LogStorage` contract run against both implementations: the SQLite Raft
 * log (reopening the file after each test) and the in-memory storage the
 * core's tests and the simulation use as their disk.
 */

import { MemoryStorage } from "../../src/raft/mod.ts";
import { logStorageContract } from "./contract.ts";
import { sqliteSubject } from "./helpers.ts";

logStorageContract("sqlite", sqliteSubject);

logStorageContract("memory", () => {
  const storage = new MemoryStorage();
  return { storage, [Symbol.dispose]: () => storage.close() };
});
