// The sandbox agent: connects to the firewall over vsock (its only channel), opens the attested,
// encrypted channel over it (its emulated PSP relayed by the firewall), places the inputs it is
// sent (read-only, tmpfs), receives what to run, runs the workload, ships its outputs and exit
// status, and ends (init then powers the VM off).
import { connectVsock } from "../../proto/src/vsock-stream.ts";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { canonicalJson } from "../../proto/src/manifest/digest.ts";
import { AGENT_PORT, FIREWALL_CID, SANDBOX_PSP_RELAY_PORT, field, readMessages, sendMessage } from "../../proto/src/control.ts";
import { EmulatedPspProvider } from "../../proto/src/attestation/index.ts";
import { secureClient } from "../../proto/src/channel/index.ts";
import { roomChannelOptions } from "../../proto/src/agent-link.ts";
import { InputFile, runWorkload } from "./agent/workload.ts";
import { parseRun, sendResults } from "./agent/protocol.ts";

const CONNECT_DEADLINE_MS = 180_000;
const AGENT_HANDSHAKE_TIMEOUT_MS = 180_000;

async function connectFirewall() {
  const deadline = Date.now() + CONNECT_DEADLINE_MS;
  for (;;) {
    try {
      return await connectVsock(FIREWALL_CID, AGENT_PORT, 5_000);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** An input's mount path: what the room allows (room.ts checks it too, on the firewall's side). */
function inputMount(p: string): string {
  if (!p.startsWith("/data/in/") || p.split("/").some((s, i) => i > 0 && (s === "" || s === "." || s === ".."))) throw new Error(`bad input mount ${p.slice(0, 100)}`);
  return p;
}

/** Out of the OOM killer's reach (init sets it already; this checks, and sets it if not). */
function protectFromOom(): void {
  const file = "/proc/self/oom_score_adj";
  try {
    if (readFileSync(file, "utf8").trim() !== "-1000") writeFileSync(file, "-1000");
  } catch (err) {
    console.error(`airlock-agent: cannot protect the agent from the OOM killer: ${(err as Error).message}`);
  }
}

/**
 * The room the firewall says it serves must be the one this sandbox was launched for (its digest
 * is our host_data, which the handshake proved the firewall shares), and the firewall must run the
 * image that room pins. Otherwise nothing runs: the host launched a firewall of its own making.
 */
function checkFirewall(room: Record<string, unknown>, peer: { measurement: string; hostData: string }): void {
  const digest = createHash("sha256").update(canonicalJson(room)).digest("hex");
  if (digest !== peer.hostData) throw new Error("the room the firewall sent is not the room this sandbox was launched for");
  const pins = room.attestation as { firewall?: unknown } | undefined;
  if (typeof pins?.firewall !== "string" || pins.firewall !== peer.measurement) throw new Error("the firewall's launch measurement is not the one the room pins");
}

async function main(): Promise<number> {
  protectFromOom();
  const raw = await connectFirewall();
  // The firewall must show a report from this room's launch (same root, same host_data as ours);
  // its measurement is checked against the room's pin once the room arrives (below).
  const provider = new EmulatedPspProvider({ connect: () => connectVsock(FIREWALL_CID, SANDBOX_PSP_RELAY_PORT, 10_000), timeoutMs: 20_000 });
  // The firewall accepts us as soon as it boots but answers the handshake only after its own checks
  // (attestation, key release, consent): give it time.
  const { stream: link, peer } = await secureClient(raw, roomChannelOptions(provider, { peer: "firewall", timeoutMs: AGENT_HANDSHAKE_TIMEOUT_MS }));
  link.on("error", () => {}); // reported by the reads below
  await sendMessage(link, { type: "hello", agent: "airlock-sandbox/1" });
  const messages = readMessages(link);
  let run: Record<string, unknown> | undefined;
  let input: InputFile | undefined;
  // Inputs come first, then the run message.
  while (!run) {
    const m = await messages.next();
    if (m.done) throw new Error("the firewall closed the link before the run");
    const v = m.value;
    if (v.kind === "data") {
      if (!input) throw new Error("input data outside an input");
      input.write(v.data);
    } else if (v.value.type === "input") {
      if (input) throw new Error("an input inside an input");
      input = new InputFile(inputMount(field.string(v.value, "mount", 1024)));
    } else if (v.value.type === "input-end") {
      if (!input || field.int(v.value, "bytes", 0, 2 ** 44) !== input.bytes) throw new Error("input-end does not match the input");
      input.finish();
      input = undefined;
      await sendMessage(link, { type: "input-placed", name: v.value.name });
    } else if (v.value.type === "abort") {
      // Stay until the firewall closes the link (bounded): it reports to the host first.
      const reason = String(v.value.reason).slice(0, 200);
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const end = await Promise.race([messages.next().then((x) => x.done === true, () => true), new Promise<boolean>((r) => setTimeout(() => r(true), deadline - Date.now()))]);
        if (end) break;
      }
      throw new Error(`the firewall aborted the run: ${reason}`);
    } else if (v.value.type === "run") {
      run = v.value;
    } else {
      throw new Error(`unexpected message ${String(v.value.type).slice(0, 40)}`);
    }
  }
  const spec = parseRun(run);
  checkFirewall(spec.room, peer);
  const startedAt = Date.now();
  const result = await runWorkload({
    command: spec.command,
    env: spec.env,
    outputMounts: spec.outputs.map((o) => o.mount),
    timeoutSeconds: spec.timeoutSeconds,
    consoleMaxBytes: spec.console ? spec.console.maxBytes : null,
  });
  // With padTo, nothing crosses the fabric before the padded time: the run's duration stays inside.
  const padUntil = startedAt + (spec.padToSeconds ?? 0) * 1000;
  if (Date.now() < padUntil) await new Promise((r) => setTimeout(r, padUntil - Date.now()));
  // Throws (no output read, the run fails) if a process of the workload user survived.
  await sendResults(link, spec, result);
  // Wait for the firewall's bye before the VM powers off. Not bounded: a held pair (airlock up)
  // stays up until it is stopped, which closes the link.
  const bye = await messages.next();
  const ok = !bye.done && bye.value.kind === "json" && bye.value.value.type === "bye";
  link.end();
  await new Promise((r) => setTimeout(r, 100));
  link.destroy();
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    // The sandbox console is not read by the host; this is for --debug only.
    console.error(`airlock-agent: ${err.message}`);
    process.exit(1);
  },
);
