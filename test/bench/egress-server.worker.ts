// The egress bench's HTTPS server, in a thread of its own so that its TLS work does not share the
// bench's thread with the client and the proxy.
import { parentPort, workerData } from "node:worker_threads";
import { startServer, type TestPki } from "../egress/server.ts";

const server = await startServer(workerData as TestPki);
parentPort!.postMessage(server.port);
parentPort!.on("message", () => void server.close().then(() => process.exit(0)));
