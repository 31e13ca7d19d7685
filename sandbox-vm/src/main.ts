// The sandbox agent: connects to the firewall over vsock (its only channel), receives what to run,
// runs the workload, ships its outputs and exit status, and ends (init then powers the VM off).
import { connectVsock } from "../../proto/src/vsock-stream.ts";
import { AGENT_PORT, FIREWALL_CID, field, readMessages, sendBytes, sendMessage } from "../../proto/src/control.ts";
import { collectOutput, runWorkload } from "./agent/workload.ts";

const CONNECT_DEADLINE_MS = 120_000;

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

async function main(): Promise<number> {
  const link = await connectFirewall();
  await sendMessage(link, { type: "hello", agent: "airlock-sandbox/1" });
  const messages = readMessages(link);
  const first = await messages.next();
  if (first.done || first.value.kind !== "json" || first.value.value.type !== "run") throw new Error("the firewall did not send a run message");
  const run = first.value.value;
  const command = (run.command as unknown[]).map((c) => String(c));
  const env = run.env as Record<string, string>;
  const outputs = (run.outputs as { name: string; mount: string; maxBytes: number }[]) ?? [];
  const timeoutSeconds = field.int(run, "timeoutSeconds", 1, 7 * 24 * 3600);

  const result = await runWorkload({ command, env, outputMounts: outputs.map((o) => o.mount), timeoutSeconds });

  await sendMessage(link, { type: "file", output: "console", path: "console.log", size: result.console.length, truncated: result.consoleTruncated });
  await sendBytes(link, result.console);
  for (const o of outputs) {
    const { files, skipped, overLimit } = collectOutput(o.mount, o.maxBytes);
    for (const f of files) {
      await sendMessage(link, { type: "file", output: o.name, path: f.path, size: f.data.length });
      await sendBytes(link, f.data);
    }
    if (skipped.length || overLimit) await sendMessage(link, { type: "output-note", output: o.name, skipped, overLimit });
  }
  await sendMessage(link, { type: "exit", code: result.code });
  // Wait for the firewall to acknowledge before the VM powers off.
  const bye = await messages.next();
  link.destroy();
  return bye.done ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    // The sandbox console is not read by the host; this is for --debug only.
    console.error(`airlock-agent: ${err.message}`);
    process.exit(1);
  },
);
