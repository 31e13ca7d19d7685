// The emulated PSP for hosts without SEV-SNP (`--tee emulated`): it signs reports in the exact SNP
// binary format with a test VCEK under a test ARK. The verifier rejects them unless told to trust
// that ARK, so an emulated report is never mistaken for a real one.
//
// Persistence: the chain (public certificates) and the VCEK private key live in a state dir so
// repeated runs reuse one test root instead of generating RSA-4096 keys each time. The ARK and ASK
// private keys are never stored (see createTestChain): the root cannot be used to mint anything
// more. The VCEK key is written as PKCS#8 with mode 0600 in a 0700 directory; it is a test key that
// can only forge reports for a root nobody trusts by default. Without a state dir, everything
// stays in this process's memory.
import { createPrivateKey, randomBytes, sign as cryptoSign } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import type { Duplex } from "node:stream";
import { AirlockError, isErrnoException } from "../../../proto/src/errors.ts";
import type { Logger } from "../../../proto/src/log.ts";
import { silentLogger } from "../../../proto/src/log.ts";
import { encodeTcb, REPORT_SIZE, serializeReport, SIGNATURE_ALGO_ECDSA_P384_SHA384, SIGNED_SIZE } from "../../../proto/src/attestation/report.ts";
import type { AttestationReport, Product, TcbVersion } from "../../../proto/src/attestation/report.ts";
import { readFrames, writeFrame } from "../../../proto/src/framing.ts";
import { decodePspRequest, encodePspResponse, nextFrame, PSP_MAX_FRAME } from "../../../proto/src/attestation/psp-wire.ts";
import type { ReportEvidence } from "../../../proto/src/attestation/psp-wire.ts";
import { snpLaunchDigest } from "../measure/index.ts";
import type { SnpLaunchInputs } from "../measure/index.ts";
import { parseCert } from "../../../proto/src/attestation/certs.ts";
import { createTestChain, toPem } from "./test-chain.ts";
import type { TestChain } from "./test-chain.ts";

/** A plausible current TCB per product (values seen on real parts). */
export const DEFAULT_TCB: Record<Product, TcbVersion> = {
  milan: { bootloader: 4, tee: 0, snp: 22, microcode: 213 },
  genoa: { bootloader: 9, tee: 0, snp: 21, microcode: 72 },
  turin: { fmc: 1, bootloader: 1, tee: 1, snp: 1, microcode: 63 },
};

const CPUID: Record<Product, { family: number; model: number; stepping: number }> = {
  milan: { family: 0x19, model: 0x01, stepping: 0x01 },
  genoa: { family: 0x19, model: 0x11, stepping: 0x01 },
  turin: { family: 0x1a, model: 0x02, stepping: 0x00 },
};

/** What was launched: the report carries it, the guest cannot choose it. */
export interface GuestLaunch {
  /** SNP launch digest of exactly what was launched (48 bytes), from the measure code. */
  measurement: Buffer;
  hostData?: Buffer;
  policy: bigint;
  /** The VMPL the guest runs at; it may ask for reports at this VMPL or a less privileged one. */
  vmpl?: number;
  familyId?: Buffer;
  imageId?: Buffer;
  guestSvn?: number;
  idKeyDigest?: Buffer;
  authorKeyDigest?: Buffer;
  /** Identifies the guest across its reports; set once per launch (random when absent). */
  reportId?: Buffer;
}

const STATE_FILES = { ark: "ark.pem", ask: "ask.pem", vcek: "vcek.der", key: "vcek-key.pem", meta: "psp.json" } as const;

export class EmulatedPsp {
  readonly product: Product;
  readonly tcb: TcbVersion;
  readonly chipId: Buffer;
  readonly arkPem: string;
  readonly askPem: string;
  readonly vcekDer: Buffer;
  private readonly vcekKey: KeyObject;

  private constructor(chain: TestChain) {
    this.product = chain.product;
    this.tcb = chain.tcb;
    this.chipId = chain.chipId;
    this.arkPem = toPem(chain.arkDer);
    this.askPem = toPem(chain.askDer);
    this.vcekDer = chain.vcekDer;
    this.vcekKey = chain.vcekKey;
  }

  /** ASK then ARK, as AMD KDS serves cert_chain. */
  get chainPem(): string {
    return this.askPem + this.arkPem;
  }

  /** A PSP whose keys live only in this process. */
  static createInMemory(options: { product?: Product; tcb?: TcbVersion } = {}): EmulatedPsp {
    const product = options.product ?? "milan";
    return new EmulatedPsp(createTestChain({ product, tcb: options.tcb ?? DEFAULT_TCB[product] }));
  }

  /** Loads the PSP persisted in stateDir, creating it on first use. */
  static open(stateDir: string, options: { product?: Product; log?: Logger } = {}): EmulatedPsp {
    const log = options.log ?? silentLogger;
    const file = (name: string): string => path.join(stateDir, name);
    let meta: { product: Product; tcb: TcbVersion; chipId: string } | undefined;
    try {
      meta = JSON.parse(readFileSync(file(STATE_FILES.meta), "utf8"));
    } catch (err) {
      if (!isErrnoException(err, "ENOENT")) throw new AirlockError("INTERNAL", `emulated PSP state ${file(STATE_FILES.meta)} is unreadable: ${(err as Error).message}`, { cause: err, hint: "delete the emulated PSP state dir to start a new test root" });
    }
    if (meta) {
      if (options.product && options.product !== meta.product) {
        throw new AirlockError("CONFLICT", `emulated PSP state ${stateDir} holds a ${meta.product} chain, not ${options.product}`, { hint: "use another state dir per product" });
      }
      const chain: TestChain = {
        product: meta.product,
        tcb: meta.tcb,
        chipId: Buffer.from(meta.chipId, "hex"),
        arkDer: parseCert(readFileSync(file(STATE_FILES.ark), "latin1"), "emulated ARK").der,
        askDer: parseCert(readFileSync(file(STATE_FILES.ask), "latin1"), "emulated ASK").der,
        vcekDer: readFileSync(file(STATE_FILES.vcek)),
        vcekKey: createPrivateKey(readFileSync(file(STATE_FILES.key))),
      };
      log.debug({ stateDir, product: meta.product }, "emulated PSP loaded");
      return new EmulatedPsp(chain);
    }
    const noPsp = (): AirlockError => new AirlockError("CONFLICT", `emulated PSP state ${stateDir} exists but holds no PSP`, { hint: "delete it or choose another state dir" });
    if (existsSync(stateDir) && readdirSync(stateDir).length > 0) throw noPsp();
    const product = options.product ?? "milan";
    const chain = createTestChain({ product, tcb: DEFAULT_TCB[product] });
    // Written into a staging dir that is renamed into place: two processes creating the same state
    // at once cannot mix their chains; the loser reads the winner's.
    mkdirSync(path.dirname(stateDir), { recursive: true });
    const staging = mkdtempSync(path.join(path.dirname(stateDir), `.${path.basename(stateDir)}.tmp-`));
    const write = (name: string, data: string | Buffer, mode = 0o644): void => writeFileSync(path.join(staging, name), data, { mode });
    write(STATE_FILES.ark, toPem(chain.arkDer));
    write(STATE_FILES.ask, toPem(chain.askDer));
    write(STATE_FILES.vcek, chain.vcekDer);
    write(STATE_FILES.key, chain.vcekKey.export({ type: "pkcs8", format: "pem" }) as string, 0o600);
    write(STATE_FILES.meta, `${JSON.stringify({ product, tcb: chain.tcb, chipId: chain.chipId.toString("hex") }, null, 2)}\n`);
    chmodSync(staging, 0o700);
    try {
      renameSync(staging, stateDir); // replaces stateDir only if it is an empty directory
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      if (!isErrnoException(err, "ENOTEMPTY") && !isErrnoException(err, "EEXIST")) throw AirlockError.from(err);
      if (existsSync(file(STATE_FILES.meta))) return EmulatedPsp.open(stateDir, options);
      throw noPsp();
    }
    log.info({ stateDir, product }, "emulated PSP created a new test root");
    return new EmulatedPsp(chain);
  }

  /** Signs a report for a launched guest. */
  report(launch: GuestLaunch, request: { reportData: Buffer; vmpl: number }): Buffer {
    if (request.reportData.length !== 64) throw new AirlockError("GUEST_PROTOCOL", `report_data must be 64 bytes, got ${request.reportData.length}`);
    if (!Number.isInteger(request.vmpl) || request.vmpl < (launch.vmpl ?? 0) || request.vmpl > 3) {
      throw new AirlockError("GUEST_PROTOCOL", `a guest at VMPL ${launch.vmpl ?? 0} cannot ask for a report at VMPL ${request.vmpl}`);
    }
    if (launch.measurement.length !== 48) throw new AirlockError("INTERNAL", `measurement must be 48 bytes, got ${launch.measurement.length}`);
    const tcb = encodeTcb(this.tcb, this.product);
    const zeros = (n: number): Buffer => Buffer.alloc(n);
    const r: AttestationReport = {
      version: 3,
      guestSvn: launch.guestSvn ?? 0,
      policy: launch.policy,
      familyId: launch.familyId ?? zeros(16),
      imageId: launch.imageId ?? zeros(16),
      vmpl: request.vmpl,
      signatureAlgo: SIGNATURE_ALGO_ECDSA_P384_SHA384,
      currentTcb: tcb,
      platformInfo: 1n, // SMT enabled on the (pretend) platform
      keyInfo: { authorKeyEn: launch.authorKeyDigest !== undefined, maskChipKey: false, signingKey: "vcek" },
      reportData: request.reportData,
      measurement: launch.measurement,
      hostData: launch.hostData ?? zeros(32),
      idKeyDigest: launch.idKeyDigest ?? zeros(48),
      authorKeyDigest: launch.authorKeyDigest ?? zeros(48),
      reportId: launch.reportId ?? randomBytes(32),
      reportIdMa: Buffer.alloc(32, 0xff), // no migration agent
      reportedTcb: tcb,
      cpuid: CPUID[this.product],
      chipId: this.chipId,
      committedTcb: tcb,
      currentVersion: { major: 1, minor: 55, build: 21 },
      committedVersion: { major: 1, minor: 55, build: 21 },
      launchTcb: tcb,
      signature: { r: zeros(72), s: zeros(72) },
    };
    const raw = serializeReport(r);
    const sig = cryptoSign("sha384", raw.subarray(0, SIGNED_SIZE), { key: this.vcekKey, dsaEncoding: "ieee-p1363" });
    // r and s are stored little-endian in 72-byte fields.
    Buffer.from(sig.subarray(0, 48)).reverse().copy(raw, SIGNED_SIZE);
    Buffer.from(sig.subarray(48, 96)).reverse().copy(raw, SIGNED_SIZE + 72);
    if (raw.length !== REPORT_SIZE) throw new AirlockError("INTERNAL", "report size");
    return raw;
  }

  /** Report plus the certificates a verifier needs. */
  evidence(launch: GuestLaunch, request: { reportData: Buffer; vmpl: number }): ReportEvidence {
    return { report: this.report(launch, request), vcek: this.vcekDer, chain: this.chainPem };
  }
}

/**
 * Serves one guest's report requests on a stream until it ends (or a request is malformed, which
 * closes the stream). The launch is bound by the host: the guest chooses only report_data and VMPL.
 */
export async function servePspStream(stream: Duplex, psp: EmulatedPsp, launch: GuestLaunch, options: { log?: Logger; idleTimeoutMs?: number } = {}): Promise<number> {
  const log = options.log ?? silentLogger;
  const frames = readFrames(stream, PSP_MAX_FRAME)[Symbol.asyncIterator]();
  let served = 0;
  try {
    while (true) {
      const frame = await nextFrame(frames, options.idleTimeoutMs ?? 60_000);
      if (frame === null) break;
      let response: Buffer;
      try {
        const req = decodePspRequest(frame);
        response = encodePspResponse(psp.evidence(launch, req));
        served++;
      } catch (err) {
        const e = AirlockError.from(err);
        if (e.code !== "GUEST_PROTOCOL") throw e;
        log.warn({ reason: e.message }, "emulated PSP refused a request");
        await writeFrame(stream, encodePspResponse({ error: e.message }));
        break;
      }
      await writeFrame(stream, response);
    }
  } catch (err) {
    log.warn({ err: AirlockError.from(err).message }, "emulated PSP stream failed");
  } finally {
    stream.end();
  }
  return served;
}

/**
 * The launch an emulated guest reports: its measurement is the SNP launch digest of exactly the
 * firmware, kernel, initrd, command line and vCPUs that were launched, computed by the same code
 * as `airlock measure`, so a reviewer reproduces it from the same inputs.
 */
export async function emulatedLaunch(inputs: SnpLaunchInputs, options: Omit<GuestLaunch, "measurement">): Promise<GuestLaunch> {
  const { digest } = await snpLaunchDigest(inputs);
  return { ...options, measurement: digest, reportId: options.reportId ?? randomBytes(32) };
}

export interface PspListener {
  path: string;
  close(): Promise<void>;
}

/**
 * Serves one guest's emulated PSP on a Unix socket: the vsock fabric's host listener path for
 * PSP_VSOCK_PORT (`<uds-path>_1025`), or any path in tests. close() also ends open sessions.
 */
export async function listenPsp(socketPath: string, psp: EmulatedPsp, launch: GuestLaunch, options: { log?: Logger; idleTimeoutMs?: number } = {}): Promise<PspListener> {
  const sessions = new Set<net.Socket>();
  const guest: GuestLaunch = { ...launch, reportId: launch.reportId ?? randomBytes(32) }; // one guest, one report_id
  const server = net.createServer((conn) => {
    sessions.add(conn);
    conn.on("close", () => sessions.delete(conn));
    conn.on("error", () => undefined); // a guest that resets the stream is not our failure
    void servePspStream(conn, psp, guest, options);
  });
  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, resolve);
  });
  return {
    path: socketPath,
    close: async () => {
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(socketPath, { force: true });
    },
  };
}
