// The key broker: startKbs embeds it (airlock run), `airlock kbs serve` runs it alone.
export { brokerPublicKey, startKbs } from "./server.ts";
export type { KbsOptions, KbsHandle, KbsListen } from "./server.ts";
export { KeyStore, loadMasterKey, checkPolicy } from "./store.ts";
export type { KeyPolicy } from "./store.ts";
