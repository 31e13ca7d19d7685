// For the agent's unit tests: what a sender wrote to a stream, as the messages the firewall would read.
import { PassThrough, Readable } from "node:stream";
import { readMessages, type Incoming } from "../../../proto/src/control.ts";
import { AgentToFirewallSchema, type AgentToFirewall } from "../../../proto/gen/airlock/v1/agent_pb.ts";

export async function capture(send: (link: PassThrough) => Promise<void>): Promise<Incoming<AgentToFirewall>[]> {
  const link = new PassThrough();
  const chunks: Buffer[] = [];
  link.on("data", (c: Buffer) => chunks.push(c));
  await send(link);
  const out: Incoming<AgentToFirewall>[] = [];
  for await (const m of readMessages(Readable.from([Buffer.concat(chunks)]), AgentToFirewallSchema, "the agent")) out.push(m.kind === "data" ? { kind: "data", data: Buffer.from(m.data) } : m);
  return out;
}


export { messagesOf, plain } from "../../../proto/src/test-wire.ts";
