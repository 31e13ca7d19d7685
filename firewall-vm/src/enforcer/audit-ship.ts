// The audit trail leaves the firewall VM as it is written: every record, once the AuditLog has
// made it durable, is sent to the host before append() returns to the enforcer. So the host holds
// every record the enforcer acted on even if the enforcer is killed (kill -9) or its VM dies; the
// host cannot forge or reorder them (hash chain, signed checkpoints), only cut the tail, which
// `airlock audit verify` reports. Checkpoints the log writes on its own timer go with the next send.
import { open } from "node:fs/promises";
import type { AuditLog, AuditRecord, Json } from "../../../proto/src/audit/index.ts";
import type { HostChannel } from "./host-channel.ts";

/** What the enforcer records through: the AuditLog's append, shipped. */
export interface AuditSink {
  append(kind: string, data?: Json): Promise<AuditRecord>;
}

export class ShippedAudit implements AuditSink {
  private offset = 0;
  private shipping: Promise<void> = Promise.resolve();

  constructor(
    readonly log: AuditLog,
    private readonly host: HostChannel,
  ) {}

  async append(kind: string, data: Json = {}): Promise<AuditRecord> {
    const r = await this.log.append(kind, data);
    await this.ship();
    return r;
  }

  async close(data: Record<string, Json> = {}): Promise<void> {
    await this.log.close(data);
    await this.ship();
  }

  /** Sends the complete lines written since the last send. */
  ship(): Promise<void> {
    this.shipping = this.shipping.then(async () => {
      const fh = await open(this.log.path, "r");
      try {
        const size = (await fh.stat()).size;
        if (size <= this.offset) return;
        const buf = Buffer.alloc(size - this.offset);
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        const end = buf.subarray(0, bytesRead).lastIndexOf(0x0a) + 1;
        if (end === 0) return;
        await this.host.exclusive(async (send, data) => {
          await send({ case: "auditLines", value: { size: end } });
          await data(buf.subarray(0, end));
        });
        this.offset += end;
      } finally {
        await fh.close();
      }
    });
    return this.shipping;
  }
}
