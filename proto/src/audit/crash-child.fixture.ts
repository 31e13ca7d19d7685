// Child process for the kill -9 test: appends records forever and reports each acknowledged seq
// on stdout ("ack N") only after append() resolved, i.e. after the record was fdatasync'd.
import { generateKeyPairSync } from "node:crypto";
import { AuditLog, signerFromPrivateKey } from "./index.ts";

const file = process.argv[2]!;
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const log = await AuditLog.create(file, { signer: signerFromPrivateKey(privateKey), checkpointEvery: 7, checkpointIntervalMs: 0 });
process.stdout.write(`key ${publicKey.export({ format: "der", type: "spki" }).toString("base64")}\n`);
for (let i = 0; ; i++) {
  const r = await log.append("input.served", { i, name: `chunk-${i}` });
  process.stdout.write(`ack ${r.seq} ${i}\n`);
}
