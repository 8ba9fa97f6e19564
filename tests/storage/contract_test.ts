/** The `LogStorage` contract run against the SQLite Raft log, reopening the file after each test. */

import { logStorageContract } from "./contract.ts";
import { sqliteSubject } from "./helpers.ts";

logStorageContract("sqlite", sqliteSubject);
