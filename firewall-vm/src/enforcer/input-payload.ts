// An input's age payload on its way from the host to the agent, still sealed (session.ts opens the
// header and hands the agent the payload key). The host's pieces are gathered into clear frames of
// up to INPUT_FRAME bytes (control.ts sendClearData: age authenticates them, so the channel does
// not seal them again), each sent as soon as it is full, with the channel's backpressure.
import type { Writable } from "node:stream";
import { sendClearData } from "../../../proto/src/control.ts";
import { InputRefused_Fault } from "../../../proto/gen/airlock/v1/agent_pb.ts";
import { INPUT_FRAME } from "./input-timing.ts";

/** Sends every byte of `payload` to the agent in frames of up to INPUT_FRAME; resolves with the count. */
export async function forwardPayload(agent: Writable, payload: AsyncIterable<Buffer>): Promise<number> {
  let total = 0;
  let batch: Buffer[] = [];
  let batched = 0;
  for await (let piece of payload) {
    total += piece.length;
    while (batched + piece.length >= INPUT_FRAME) {
      const take = INPUT_FRAME - batched;
      batch.push(piece.subarray(0, take));
      piece = piece.subarray(take);
      await sendClearData(agent, batch);
      batch = [];
      batched = 0;
    }
    if (piece.length > 0) {
      batch.push(piece);
      batched += piece.length;
    }
  }
  if (batched > 0) await sendClearData(agent, batch);
  return total;
}

/** The agent's verdict on a payload, in words (the audit record's and the user's). */
export function faultText(fault: InputRefused_Fault): string {
  switch (fault) {
    case InputRefused_Fault.TRUNCATED:
      return "truncated: the payload ends without its final chunk";
    case InputRefused_Fault.MALFORMED:
      return "malformed: data where an age payload has none (after its final chunk, or not the length the firewall sent)";
    default:
      return "tampered: the payload fails authentication (changed, reordered, cut or extended)";
  }
}
