// The agent's end of its link to the firewall (proto/airlock/v1/agent.proto), inside the attested
// channel: what it sends, and the firewall's messages, decoded and checked against their declaration.
import type { Readable, Writable } from "node:stream";
import { readMessages, sendMessage, type Incoming, type Outgoing } from "../../../proto/src/control.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, type AgentToFirewall, type FirewallToAgent } from "../../../proto/gen/airlock/v1/agent_pb.ts";

export type FromFirewall = Incoming<FirewallToAgent>;

/** Sends one message to the firewall. */
export const toFirewall = (link: Writable, message: Outgoing<AgentToFirewall>): Promise<void> => sendMessage(link, AgentToFirewallSchema, message);

/** The firewall's messages and data frames, in order. */
// Clear frames: an input's age payload, which placeInputs opens (inputs.ts).
export const fromFirewall = (link: Readable): AsyncGenerator<FromFirewall> => readMessages(link, FirewallToAgentSchema, "the firewall", undefined, true);
