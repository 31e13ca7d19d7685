// The enforcer's side of the control link to the host. After the room, the host speaks only when
// asked (input files), so one reader serves requests in order. The host is untrusted: what it
// sends is checked here, and what the enforcer relies on from it (an input file) is authenticated
// (age).
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../proto/src/errors.ts";
import { expectMessage, readMessages, sendBytes, sendData, sendMessage, type CaseOf, type Incoming, type Outgoing, type ValueOf } from "../../../proto/src/control.ts";
import { num } from "../../../proto/src/wire.ts";
import { FirewallToHostSchema, HostToFirewallSchema, type FirewallToHost, type HostToFirewall } from "../../../proto/gen/airlock/v1/control_pb.ts";

/** A message to the host: one case of control.proto's FirewallToHost, with its value. */
export type ToHost = Outgoing<FirewallToHost>;

export class HostChannel {
  private readonly messages: AsyncGenerator<Incoming<HostToFirewall>>;
  private lock: Promise<void> = Promise.resolve();

  constructor(readonly stream: Duplex) {
    this.messages = readMessages(stream, HostToFirewallSchema, "the host", 8 * 1024 * 1024);
  }

  async next(): Promise<Incoming<HostToFirewall>> {
    const m = await this.messages.next();
    if (m.done) throw new AirlockError("FABRIC", "the host closed the control link");
    return m.value;
  }

  /** The host's next message, which must be of case `kind`. */
  async expect<K extends CaseOf<HostToFirewall>>(kind: K): Promise<ValueOf<HostToFirewall, K>> {
    return expectMessage(await this.next(), kind, "the host");
  }

  /**
   * Runs `fn` with the link to itself: a message followed by its data frames must not be split by
   * another sender (the audit shipper runs alongside the session).
   */
  exclusive<T>(fn: (send: (message: ToHost) => Promise<void>, data: (bytes: Buffer | readonly Buffer[]) => Promise<void>) => Promise<T>): Promise<T> {
    // A buffer goes in frames of up to 1 MiB; a list of buffers (at most 8 MiB together) in one frame.
    const data = (b: Buffer | readonly Buffer[]): Promise<void> => (Buffer.isBuffer(b) ? sendBytes(this.stream, b) : sendData(this.stream, b));
    const p = this.lock.then(() => fn((m) => sendMessage(this.stream, FirewallToHostSchema, m), data));
    this.lock = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  send(message: ToHost): Promise<void> {
    return this.exclusive((send) => send(message));
  }

  /** The encrypted bytes of one input, as the host streams them (authenticated later by age). */
  async *input(name: string): AsyncGenerator<Buffer> {
    await this.send({ case: "inputRequest", value: { name } });
    const head = await this.expect("inputFile");
    if (head.name !== name) throw new AirlockError("GUEST_PROTOCOL", `the host sent another input for ${name}`);
    const size = num(head.size);
    let got = 0;
    while (got < size) {
      const d = await this.next();
      if (d.kind !== "data" || got + d.data.length > size) throw new AirlockError("GUEST_PROTOCOL", `input ${name}: the host's data does not match its declared size`);
      got += d.data.length;
      yield d.data;
    }
  }
}
