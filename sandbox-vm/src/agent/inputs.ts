// The input placement loop: before the run message, the firewall streams each input (decrypted on
// its side) as `input {name, mount}` + data frames + `input-end {bytes}`; each is written under
// /data/in on tmpfs and put in place, read-only, only after its input-end, then acknowledged with
// `input-placed`. An `abort` ends the run (after the firewall has closed the link, bounded).
import type { Writable } from "node:stream";
import { field, sendMessage, type Incoming } from "../../../proto/src/control.ts";
import { InputFile } from "./workload.ts";

/** An input's mount path: what the room allows (room.ts checks it too, on the firewall's side). */
export function inputMount(p: string): string {
  if (!p.startsWith("/data/in/") || p.split("/").some((s, i) => i > 0 && (s === "" || s === "." || s === ".."))) throw new Error(`bad input mount ${p.slice(0, 100)}`);
  return p;
}

/** Places every input the firewall sends; resolves with the run message that follows them. */
export async function placeInputs(link: Writable, messages: AsyncIterator<Incoming>): Promise<Record<string, unknown>> {
  let input: InputFile | undefined;
  for (;;) {
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
      return v.value;
    } else {
      throw new Error(`unexpected message ${String(v.value.type).slice(0, 40)}`);
    }
  }
}
