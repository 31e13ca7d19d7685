// The channel bench's receiving end in a thread of its own — its own event loop and heap, as in a
// room, where the two ends are in different VMs. It connects to the bench's socket and opens the
// channel as the server; for each round it reads the bytes the bench announces, collects its own
// garbage (as the bench does for its side), and answers with how long its loop was busy.
import net from "node:net";
import { performance } from "node:perf_hooks";
import vm from "node:vm";
import { parentPort, workerData } from "node:worker_threads";
import { secureServer } from "../../proto/src/channel/index.ts";
import { testAttest, testVerifyPeer } from "../../proto/src/channel/test-evidence.ts";
import type { TestIdentity } from "../../proto/src/channel/test-evidence.ts";

export interface ReceiverData {
  path: string;
  own: TestIdentity;
  peer: TestIdentity;
}
export interface RoundDone {
  /** The receiving thread's busy time over the round (event loop utilization), ms. */
  busyMs: number;
}

const data = workerData as ReceiverData;
// Structured cloning turned the Buffers into Uint8Arrays.
const identity = (id: TestIdentity): TestIdentity => ({ ...id, publicRaw: Buffer.from(id.publicRaw) });
// The bench set --expose-gc before starting this thread (V8 flags are per process).
const collectGarbage = vm.runInNewContext("gc") as () => void;

const socket = net.createConnection(data.path);
await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
const { stream } = await secureServer(socket, { attest: testAttest(identity(data.own)), verifyPeer: testVerifyPeer(identity(data.peer)) });
stream.on("error", () => undefined); // the bench hangs up under the open channel when it is done

let received = 0;
let expected = Infinity;
let elu = performance.eventLoopUtilization();
const check = (): void => {
  if (received < expected) return;
  received -= expected;
  expected = Infinity;
  collectGarbage();
  const busyMs = performance.eventLoopUtilization(elu).active;
  parentPort!.postMessage({ busyMs } satisfies RoundDone);
};
stream.on("data", (chunk: Buffer) => {
  received += chunk.length;
  check();
});
parentPort!.on("message", (m: { bytes: number } | "stop") => {
  if (m === "stop") {
    stream.destroy();
    return void parentPort!.close();
  }
  elu = performance.eventLoopUtilization();
  expected = m.bytes;
  check();
});
parentPort!.postMessage("ready");
