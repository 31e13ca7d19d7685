// One sandbox VM serving the room (an "isolate" in Encrypted Zone's words), as the firewall sees
// it over the attested agent channel: the agent said hello, the firewall sent Run with the
// service's port, and the agent says ServerListening once the workload accepts connections. Each
// call then opens a stream to that port (ServiceOpen + egress-style data, proto/src/egress-mux.ts).
// Everything the agent sends is the sandbox's and is checked: anything but its streams' messages,
// ServerListening and Exit breaks the protocol and retires the instance.
import type { Duplex } from "node:stream";
import { AirlockError } from "../../../../proto/src/errors.ts";
import { bodyOf, expectMessage, readMessages, sendMessage, type Incoming, type Outgoing } from "../../../../proto/src/control.ts";
import { AgentToFirewallSchema, FirewallToAgentSchema, type AgentToFirewall, type FirewallToAgent } from "../../../../proto/gen/airlock/v1/agent_pb.ts";
import { EgressMux } from "../../../../proto/src/egress-mux.ts";
import { roomBytes, type RoomPlan } from "../../../../proto/src/room.ts";

const MAX_AGENT_FRAME = 1024 * 1024 + 64;
/** Firewall-chosen stream ids (agent.proto ServiceOpen). */
const FIRST_ID = 1024;
const LAST_ID = 2047;
/** How long the workload may take to listen, and the firewall's own bound on hearing it. */
export const READY_TIMEOUT_S = 120;

export class SandboxInstance {
  private readonly mux: EgressMux;
  private nextId = FIRST_ID;
  /** The workload's exit status, once it ended (the sandbox's data: its scope decides who sees it). */
  exitCode: number | undefined;
  /** Why the instance can serve no more (a protocol breach, a lost link, an exit). */
  broken: string | undefined;
  readonly listening: Promise<void>;

  private constructor(
    readonly generation: number,
    private readonly link: Duplex,
    private readonly messages: AsyncGenerator<Incoming<AgentToFirewall>>,
    private readonly port: number,
  ) {
    this.mux = new EgressMux((m) => this.send(m));
    this.listening = this.follow();
    this.listening.catch(() => undefined);
  }

  /** Greets the agent on an opened channel and starts the workload; resolves once it listens. */
  static async start(generation: number, link: Duplex, room: RoomPlan, onHello: () => Promise<void>): Promise<SandboxInstance> {
    const service = room.workload.service!;
    const messages = readMessages(link, AgentToFirewallSchema, "the sandbox agent", MAX_AGENT_FRAME);
    const first = await messages.next();
    if (first.done) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent closed the link before its hello");
    expectMessage(first.value, "hello", "the sandbox agent");
    await onHello();
    await sendMessage(link, FirewallToAgentSchema, {
      case: "run",
      value: {
        command: room.workload.command,
        env: room.workload.env,
        timeoutSeconds: room.workload.timeoutSeconds,
        roomCanonicalJson: roomBytes(room.canonical),
        outputs: [],
        egress: [],
        service: { port: service.port, readyTimeoutSeconds: READY_TIMEOUT_S },
      },
    });
    const instance = new SandboxInstance(generation, link, messages, service.port);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([instance.listening, new Promise((_, reject) => (timer = setTimeout(() => reject(new AirlockError("TIMEOUT", `the workload's server did not listen on port ${service.port} within ${READY_TIMEOUT_S} s`)), (READY_TIMEOUT_S + 30) * 1000)))]);
    } catch (err) {
      instance.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return instance;
  }

  private send(m: Outgoing<FirewallToAgent>): Promise<void> {
    return sendMessage(this.link, FirewallToAgentSchema, m);
  }

  /** Reads the agent's messages for the instance's life; resolves at ServerListening. */
  private follow(): Promise<void> {
    return new Promise((resolve, reject) => {
      void (async () => {
        try {
          for await (const m of this.messages) {
            if (m.kind !== "message") throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent sent data outside a stream");
            const body = bodyOf(m.message);
            switch (body.case) {
              case "serverListening":
                resolve();
                break;
              case "egressData":
              case "egressClose":
              case "egressAck":
                if (body.value.stream < FIRST_ID) throw new AirlockError("GUEST_PROTOCOL", "the sandbox agent used an egress stream in a service room");
                this.mux.receive(body);
                break;
              case "exit":
                this.exitCode = body.value.code;
                this.retire("the workload's server ended");
                break;
              default:
                throw new AirlockError("GUEST_PROTOCOL", `the sandbox agent sent ${body.case} to a service`);
            }
          }
          this.retire("the sandbox agent closed its link");
        } catch (err) {
          this.retire(AirlockError.from(err).message);
        }
        reject(new AirlockError("GUEST_PROTOCOL", this.broken ?? "the sandbox ended"));
      })();
    });
  }

  private retire(why: string): void {
    this.broken ??= why;
    this.mux.closeAll();
  }

  /** A new stream to the workload's port. */
  connect(): Duplex {
    if (this.broken) throw new AirlockError("GUEST_PROTOCOL", this.broken);
    let id = this.nextId;
    for (let tries = 0; this.mux.has(id); tries++) {
      if (tries > LAST_ID - FIRST_ID) throw new AirlockError("POLICY", "too many calls in flight to the sandbox");
      id = id === LAST_ID ? FIRST_ID : id + 1;
    }
    this.nextId = id === LAST_ID ? FIRST_ID : id + 1;
    const stream = this.mux.open(id, this.port);
    void this.send({ case: "serviceOpen", value: { stream: id } }).catch(() => stream.destroy());
    return stream;
  }

  /** Ends the link: the agent stops and its VM powers off (the host restarts or stops it). */
  close(): void {
    this.retire("retired");
    this.link.destroy();
  }
}
