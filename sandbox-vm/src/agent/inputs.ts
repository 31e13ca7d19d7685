// The input placement loop: before the Run message, the firewall sends each input as
// Input {name, mount, payload_key} + its age payload, still sealed, in clear frames + InputEnd
// {bytes}. The agent opens the payload as it comes (age's STREAM, with the key: a chunk's plaintext
// is written only after its tag verified), writes it under /data/in on tmpfs, and puts the file in
// place, read-only, only once the final chunk authenticated and InputEnd's length matches; then
// InputPlaced. A payload that does not open is removed and refused (InputRefused: age's verdict,
// the fault and chunk, sent before any workload ran). An Abort ends the run (after the firewall has
// closed the link, bounded).
import type { Writable } from "node:stream";
import { bodyOf } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import { PayloadOpener } from "../../../proto/src/age/stream.ts";
import { InputRefused_Fault, type Run } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { toFirewall, type FromFirewall } from "./link.ts";
import { InputFile } from "./workload.ts";

const FAULTS = { tampered: InputRefused_Fault.TAMPERED, truncated: InputRefused_Fault.TRUNCATED, malformed: InputRefused_Fault.MALFORMED } as const;

/** One input on its way in: its file, its payload's opener, and the agent's time on each. */
class Incoming {
  readonly file: InputFile;
  readonly opener: PayloadOpener;
  writeMs = 0;
  openMs = 0;
  /** Why the payload did not open, once it did not: the rest of its data is dropped unread. */
  fault: PayloadOpener["fault"];

  constructor(readonly name: string, mount: string, key: Uint8Array) {
    this.file = new InputFile(mount);
    this.opener = new PayloadOpener(Buffer.from(key));
  }

  /** Writes the plaintext `chunks` yields as the opener opens it (or records the fault and discards the file). */
  take(chunks: (opener: PayloadOpener) => Iterable<Buffer>): void {
    if (this.fault) return;
    let t = performance.now();
    try {
      for (const plain of chunks(this.opener)) {
        const opened = performance.now();
        this.openMs += opened - t;
        this.file.write(plain);
        t = performance.now();
        this.writeMs += t - opened;
      }
      this.openMs += performance.now() - t;
    } catch (err) {
      if (!this.opener.fault) throw err;
      this.refuse(this.opener.fault);
    }
  }

  /** The payload has all come: the file is put in place if it opened whole and is `bytes` long; else why not. */
  end(bytes: number): PayloadOpener["fault"] {
    this.take((opener) => opener.end());
    if (!this.fault && this.opener.bytes !== bytes) this.refuse({ kind: "malformed", chunk: 0 });
    if (!this.fault) this.file.finish();
    return this.fault;
  }

  private refuse(fault: NonNullable<PayloadOpener["fault"]>): void {
    this.fault = fault;
    this.file.discard();
  }
}

/** Places every input the firewall sends; resolves with the Run message that follows them. */
export async function placeInputs(link: Writable, messages: AsyncIterator<FromFirewall>): Promise<Run> {
  let input: Incoming | undefined;
  for (;;) {
    const m = await messages.next();
    if (m.done) throw new Error("the firewall closed the link before the run");
    const v = m.value;
    if (v.kind === "data") {
      // An input's payload comes only in clear frames (unsealed on the channel: age authenticates it here).
      if (!input || !v.clear) throw new Error("data outside an input's payload");
      input.take((opener) => opener.push(v.data));
      continue;
    }
    const body = bodyOf(v.message);
    switch (body.case) {
      case "input":
        if (input) throw new Error("an input inside an input");
        // agent.proto's bounds have checked the name, the mount (FORMAT_INPUT_MOUNT) and the key's length (wire.ts).
        input = new Incoming(body.value.name, body.value.mount, body.value.payloadKey);
        break;
      case "inputEnd": {
        if (!input || body.value.name !== input.name) throw new Error("input-end does not match the input");
        const done = input;
        input = undefined;
        const fault = done.end(num(body.value.bytes));
        if (fault) {
          await toFirewall(link, { case: "inputRefused", value: { name: done.name, fault: FAULTS[fault.kind], chunk: BigInt(fault.chunk) } });
          break;
        }
        await toFirewall(link, { case: "inputPlaced", value: { name: done.name, writeMs: Math.round(done.writeMs), openMs: Math.round(done.openMs) } });
        break;
      }
      case "abort": {
        // Stay until the firewall closes the link (bounded): it reports to the host first.
        const reason = body.value.reason;
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          const end = await Promise.race([messages.next().then((x) => x.done === true, () => true), new Promise<boolean>((r) => setTimeout(() => r(true), deadline - Date.now()))]);
          if (end) break;
        }
        throw new Error(`the firewall aborted the run: ${reason}`);
      }
      case "run":
        if (input) throw new Error("the run inside an input");
        return body.value;
      default:
        throw new Error(`the firewall sent ${body.case} before the run`);
    }
  }
}
