// The input placement loop: before the Run message, the firewall streams each input (decrypted on
// its side) as Input {name, mount} + data frames + InputEnd {bytes}; each is written under
// /data/in on tmpfs and put in place, read-only, only after its InputEnd, then acknowledged with
// InputPlaced. An Abort ends the run (after the firewall has closed the link, bounded).
import type { Writable } from "node:stream";
import { bodyOf } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import type { Run } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { toFirewall, type FromFirewall } from "./link.ts";
import { InputFile } from "./workload.ts";

/** Places every input the firewall sends; resolves with the Run message that follows them. */
export async function placeInputs(link: Writable, messages: AsyncIterator<FromFirewall>): Promise<Run> {
  let input: InputFile | undefined;
  // Time spent writing the current input to tmpfs (reported to the firewall for the benchmark).
  let writeMs = 0;
  for (;;) {
    const m = await messages.next();
    if (m.done) throw new Error("the firewall closed the link before the run");
    const v = m.value;
    if (v.kind === "data") {
      if (!input) throw new Error("input data outside an input");
      const t = performance.now();
      input.write(v.data);
      writeMs += performance.now() - t;
      continue;
    }
    const body = bodyOf(v.message);
    switch (body.case) {
      case "input":
        if (input) throw new Error("an input inside an input");
        // agent.proto's FORMAT_INPUT_MOUNT has checked the mount (wire.ts).
        input = new InputFile(body.value.mount);
        writeMs = 0;
        break;
      case "inputEnd":
        if (!input || num(body.value.bytes) !== input.bytes) throw new Error("input-end does not match the input");
        input.finish();
        input = undefined;
        await toFirewall(link, { case: "inputPlaced", value: { name: body.value.name, writeMs: Math.round(writeMs) } });
        break;
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
