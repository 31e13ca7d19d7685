// How a guest obtains its attestation report: one interface, two providers.
//   - configfs-tsm: real SEV-SNP guests (Linux ≥ 6.7, /sys/kernel/config/tsm/report).
//   - emulated: the host's emulated PSP over a byte stream (Unix socket now, vsock later).
// No host-only dependencies: this file runs inside the firewall VM.
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Duplex } from "node:stream";
import { AirlockError, isErrnoException } from "../errors.ts";
import { readFrames, writeFrame } from "../framing.ts";
import { decodePspResponse, encodePspRequest, nextFrame, PSP_MAX_FRAME } from "./psp-wire.ts";
import type { ReportEvidence } from "./psp-wire.ts";
import { parseReport } from "./report.ts";

export type { ReportEvidence };

/** Which TEE a guest runs under, as its launch says (`airlock.tee=` on the measured kernel command line). */
export type Tee = "emulated" | "snp";

/**
 * The TEE a kernel command line names: `airlock.tee=emulated|snp` (the last one wins, as for the
 * kernel's own parameters). The command line is part of the launch measurement, so the host cannot
 * change it unseen. Absent means emulated, the images' default; any other value is refused.
 */
export function teeOf(cmdline: string): Tee {
  let tee: string | undefined;
  for (const word of cmdline.trim().split(/\s+/)) if (word.startsWith("airlock.tee=")) tee = word.slice("airlock.tee=".length);
  if (tee === undefined || tee === "emulated") return "emulated";
  if (tee === "snp") return "snp";
  throw new AirlockError("LAUNCH", `the kernel command line names an unknown TEE airlock.tee=${JSON.stringify(tee.slice(0, 40))} (expected emulated or snp)`);
}

export interface ReportProvider {
  readonly kind: "configfs-tsm" | "emulated";
  /** A fresh report binding reportData (64 bytes), with the VCEK (DER) and, when known, ASK+ARK (PEM). */
  getReport(reportData: Buffer): Promise<ReportEvidence>;
}

function checkReportData(reportData: Buffer): void {
  if (reportData.length !== 64) throw new AirlockError("INTERNAL", `report_data must be 64 bytes, got ${reportData.length}`);
}

/** The report must carry what we asked for: a stale or swapped report is refused here already. */
function checkEcho(evidence: ReportEvidence, reportData: Buffer, vmpl: number | undefined, source: string): ReportEvidence {
  const report = parseReport(evidence.report);
  if (!report.reportData.equals(reportData)) throw new AirlockError("REPORT_INVALID", `${source}: the report's report_data is not the one requested (stale or swapped report)`);
  if (vmpl !== undefined && report.vmpl !== vmpl) throw new AirlockError("REPORT_INVALID", `${source}: report is for VMPL ${report.vmpl}, requested ${vmpl}`);
  return evidence;
}

// ---- configfs-tsm ----

/** GUIDs of the GHCB certificate table (auxblob), in RFC 4122 byte order. */
export const CERT_TABLE_GUID = {
  vcek: "63da758d-e664-4564-adc5-f4b93be8accd",
  vlek: "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
  ask: "4ab7b379-bbac-4fe4-a02f-05aef327c782",
  ark: "c0b406a4-a803-4952-9743-3fb6014cd0ae",
} as const;

const guidBytes = (g: string): Buffer => Buffer.from(g.replace(/-/g, ""), "hex");

/** Parses the certificate table: entries {GUID[16], u32 offset, u32 length}, ending with a zero entry. */
export function parseCertTable(aux: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const bad = (why: string): AirlockError => new AirlockError("CERT_INVALID", `configfs-tsm auxblob: ${why}`);
  for (let off = 0; ; off += 24) {
    if (off + 24 > aux.length) {
      if (aux.length === 0) return out;
      throw bad("certificate table has no terminating entry");
    }
    const guid = aux.subarray(off, off + 16);
    const offset = aux.readUInt32LE(off + 16);
    const length = aux.readUInt32LE(off + 20);
    if (offset === 0 && length === 0 && guid.every((x) => x === 0)) return out;
    if (offset < off + 24 || offset + length > aux.length) throw bad(`entry ${off / 24} points outside the table (${offset}+${length} of ${aux.length})`);
    const name = Object.entries(CERT_TABLE_GUID).find(([, g]) => guidBytes(g).equals(guid))?.[0] ?? guid.toString("hex");
    out.set(name, Buffer.from(aux.subarray(offset, offset + length)));
  }
}

export function encodeCertTable(certs: Partial<Record<keyof typeof CERT_TABLE_GUID, Buffer>>): Buffer {
  const entries = Object.entries(certs).filter(([, v]) => v) as [keyof typeof CERT_TABLE_GUID, Buffer][];
  const header = Buffer.alloc((entries.length + 1) * 24);
  let offset = header.length;
  entries.forEach(([name, der], i) => {
    guidBytes(CERT_TABLE_GUID[name]).copy(header, i * 24);
    header.writeUInt32LE(offset, i * 24 + 16);
    header.writeUInt32LE(der.length, i * 24 + 20);
    offset += der.length;
  });
  return Buffer.concat([header, ...entries.map(([, der]) => der)]);
}

const pem = (der: Buffer): string => `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;

export interface ConfigfsTsmOptions {
  /** Default /sys/kernel/config/tsm/report; tests point it at a directory standing in for configfs. */
  root?: string;
  /** VMPL to request (configfs-tsm "privlevel"); unset leaves the kernel's default. */
  privlevel?: number;
  /** VCEK (DER) to send when the host puts no certificates in auxblob (e.g. fetched from AMD KDS). */
  vcek?: Buffer;
}

export class ConfigfsTsmProvider implements ReportProvider {
  readonly kind = "configfs-tsm" as const;
  private readonly root: string;

  constructor(private readonly options: ConfigfsTsmOptions = {}) {
    this.root = options.root ?? "/sys/kernel/config/tsm/report";
  }

  async getReport(reportData: Buffer, entryName = `airlock-${randomBytes(8).toString("hex")}`): Promise<ReportEvidence> {
    checkReportData(reportData);
    const dir = path.join(this.root, entryName);
    const where = `configfs-tsm ${dir}`;
    try {
      await mkdir(dir).catch((err: unknown) => {
        if (!isErrnoException(err, "EEXIST")) throw err;
      });
      // The generation counter detects another writer racing us on the same entry.
      const generation = async (): Promise<string | undefined> => readFile(path.join(dir, "generation"), "utf8").catch(() => undefined);
      if (this.options.privlevel !== undefined) await writeFile(path.join(dir, "privlevel"), `${this.options.privlevel}\n`);
      await writeFile(path.join(dir, "inblob"), reportData);
      const gen = await generation();
      const report = await readFile(path.join(dir, "outblob"));
      const aux = await readFile(path.join(dir, "auxblob")).catch((err: unknown) => {
        if (isErrnoException(err, "ENOENT")) return Buffer.alloc(0);
        throw err;
      });
      if ((await generation()) !== gen) throw new AirlockError("REPORT_INVALID", `${where}: another writer changed the request while we read it`);
      const certs = parseCertTable(aux);
      const vcek = certs.get("vcek") ?? this.options.vcek;
      if (!vcek) throw new AirlockError("CERT_INVALID", `${where}: the host supplied no VCEK in auxblob`, { hint: "configure the host's SNP certificate table (snphost import) or fetch the VCEK from AMD KDS" });
      const ask = certs.get("ask");
      const ark = certs.get("ark");
      const evidence: ReportEvidence = { report, vcek, ...(ask && ark ? { chain: pem(ask) + pem(ark) } : {}) };
      return checkEcho(evidence, reportData, this.options.privlevel, where);
    } catch (err) {
      if (err instanceof AirlockError) throw err;
      throw new AirlockError("REPORT_INVALID", `${where}: ${(err as Error).message}`, { cause: err, hint: "SEV-SNP reports need Linux ≥ 6.7 with configfs mounted and the sev-guest driver" });
    } finally {
      await rmdir(dir).catch(() => undefined);
    }
  }
}

// ---- emulated PSP over a stream ----

export interface EmulatedProviderOptions {
  /** Opens a fresh stream to the host's emulated PSP (Unix socket, vsock...). */
  connect: () => Promise<Duplex>;
  vmpl?: number;
  timeoutMs?: number;
}

export class EmulatedPspProvider implements ReportProvider {
  readonly kind = "emulated" as const;

  constructor(private readonly options: EmulatedProviderOptions) {}

  async getReport(reportData: Buffer): Promise<ReportEvidence> {
    checkReportData(reportData);
    const vmpl = this.options.vmpl ?? 0;
    const stream = await this.options.connect();
    try {
      const frames = readFrames(stream, PSP_MAX_FRAME)[Symbol.asyncIterator]();
      await writeFrame(stream, encodePspRequest({ vmpl, reportData }));
      const frame = await nextFrame(frames, this.options.timeoutMs ?? 10_000);
      if (frame === null) throw new AirlockError("GUEST_PROTOCOL", "emulated PSP closed the stream without answering");
      return checkEcho(decodePspResponse(frame), reportData, vmpl, "emulated PSP");
    } finally {
      stream.destroy();
    }
  }
}
