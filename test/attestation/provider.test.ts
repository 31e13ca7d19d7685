// The guest-side report providers against real counterparts: the emulated PSP served over a real
// Unix socket, and configfs-tsm against a directory laid out as the kernel lays it out.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeFrame } from "../../proto/src/framing.ts";
import { decodePspResponse } from "../../proto/src/attestation/psp-wire.ts";
import { ConfigfsTsmProvider, EmulatedPspProvider, encodeCertTable, parseCertTable } from "../../proto/src/attestation/provider.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { pemToDers } from "../../proto/src/attestation/certs.ts";
import { emulatedLaunch, EmulatedPsp, listenPsp, servePspStream } from "../../host-tools/src/attestation/emulated-psp.ts";
import { snpLaunchDigest } from "../../host-tools/src/measure/index.ts";
import type { GuestLaunch } from "../../host-tools/src/attestation/emulated-psp.ts";
import { ReportVerifier } from "../../host-tools/src/attestation/verify.ts";
import { OVMF_AMDSEV_SUFFIX } from "../fixtures/index.ts";

// Reused across runs on purpose: persisting the test chain is what spares RSA-4096 key generation.
const pspState = path.join(tmpdir(), "airlock-test-emulated-psp");
const tmp = mkdtempSync(path.join(tmpdir(), "airlock-provider-"));
const launch: GuestLaunch = { measurement: Buffer.alloc(48, 0x11), hostData: Buffer.alloc(32, 0x22), policy: encodePolicy({ smt: true }), reportId: Buffer.alloc(32, 0x99) };
let psp: EmulatedPsp;
let server: net.Server;
const sock = path.join(tmp, "psp.sock");
const served: Promise<number>[] = [];

beforeAll(async () => {
  psp = EmulatedPsp.open(pspState);
  server = net.createServer((conn) => served.push(servePspStream(conn, psp, launch, { idleTimeoutMs: 5_000 })));
  await new Promise<void>((resolve) => server.listen(sock, resolve));
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await Promise.all(served);
  rmSync(tmp, { recursive: true, force: true });
});

const connect = (): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const s = net.createConnection(sock, () => resolve(s));
    s.once("error", reject);
  });

describe("EmulatedPspProvider over a Unix socket", () => {
  it("gets a report bound to the launch and to report_data, verifiable with the test root", async () => {
    const provider = new EmulatedPspProvider({ connect, vmpl: 0 });
    const reportData = Buffer.alloc(64, 0x5a);
    const ev = await provider.getReport(reportData);
    const res = new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(ev, { reportData, measurement: launch.measurement, hostData: launch.hostData! });
    expect(res.failed).toBeUndefined();
    // Two requests from the same guest carry the same report_id (one launch).
    const ev2 = await provider.getReport(Buffer.alloc(64, 1));
    expect(ev2.report.subarray(0x140, 0x160).equals(ev.report.subarray(0x140, 0x160))).toBe(true);
  });

  it("reports the launch digest of what was launched (measure code), served by listenPsp", async () => {
    const inputs = {
      ovmf: readFileSync(OVMF_AMDSEV_SUFFIX),
      vcpus: 2,
      vcpuType: "EPYC-v4",
      kernel: Buffer.from("a kernel"),
      initrd: Buffer.from("an initrd"),
      append: "console=ttyS0",
    };
    const measured = await emulatedLaunch(inputs, { policy: encodePolicy({ smt: true }), hostData: Buffer.alloc(32, 3) });
    const expected = (await snpLaunchDigest(inputs)).digest;
    expect(measured.measurement.equals(expected)).toBe(true);
    const listener = await listenPsp(path.join(tmp, "psp-launch.sock"), psp, measured, { idleTimeoutMs: 5_000 });
    try {
      const p = new EmulatedPspProvider({
        connect: () =>
          new Promise((resolve, reject) => {
            const s = net.createConnection(listener.path, () => resolve(s));
            s.once("error", reject);
          }),
      });
      const reportData = Buffer.alloc(64, 0x77);
      const res = new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(await p.getReport(reportData), { reportData, measurement: expected });
      expect(res.failed).toBeUndefined();
      // Another launch (one more vCPU) has another measurement: the verifier names it.
      const other = (await snpLaunchDigest({ ...inputs, vcpus: 3 })).digest;
      expect(new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(await p.getReport(reportData), { measurement: other }).failed?.check).toBe("measurement");
    } finally {
      await listener.close();
    }
  });

  it("the server answers a malformed request with an error and closes", async () => {
    const s = await connect();
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.write(encodeFrame(Buffer.from("hello")));
    await new Promise((resolve) => s.on("close", resolve));
    const all = Buffer.concat(chunks);
    expect(all.readUInt32BE(0)).toBe(all.length - 4);
    expect(() => decodePspResponse(all.subarray(4))).toThrow(/emulated PSP refused: PSP request: not a well-formed PspRequest/);
  });

  it("the server drops an oversize frame without allocating it", async () => {
    const s = await connect();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(0x7fffffff);
    s.write(head);
    await new Promise((resolve) => s.on("close", resolve));
    expect(s.destroyed).toBe(true);
  });
});

describe("ConfigfsTsmProvider", () => {
  it("writes inblob and privlevel, reads outblob and the auxblob certificate table", async () => {
    const root = path.join(tmp, "tsm");
    const entry = path.join(root, "e1");
    mkdirSync(entry, { recursive: true });
    const reportData = Buffer.alloc(64, 0x33);
    // Stand in for the kernel: the entry already holds the report the firmware would return.
    const ev = psp.evidence({ ...launch, vmpl: 0 }, { reportData, vmpl: 2 });
    const [ask, ark] = pemToDers(ev.chain!, "chain");
    writeFileSync(path.join(entry, "outblob"), ev.report);
    writeFileSync(path.join(entry, "auxblob"), encodeCertTable({ vcek: ev.vcek, ask: ask!, ark: ark! }));
    const provider = new ConfigfsTsmProvider({ root, privlevel: 2 });
    const got = await provider.getReport(reportData, "e1").catch((e) => e);
    // The provider removes its entry when done; a real configfs rmdir succeeds, here the files stay.
    expect(readFileSync(path.join(entry, "inblob")).equals(reportData)).toBe(true);
    expect(readFileSync(path.join(entry, "privlevel"), "utf8")).toBe("2\n");
    expect(got.report.equals(ev.report)).toBe(true);
    expect(got.vcek.equals(ev.vcek)).toBe(true);
    expect(new ReportVerifier({ trustRoots: [psp.arkPem] }).verify(got, { reportData, vmpl: 2 }).ok).toBe(true);
    // A stale outblob (another report_data) is refused.
    await expect(provider.getReport(Buffer.alloc(64, 0x44), "e1")).rejects.toThrow(/not the one requested/);
  });

  it("refuses a hostile certificate table and a missing configfs", async () => {
    const t = encodeCertTable({ vcek: Buffer.from("x") });
    t.writeUInt32LE(1 << 30, 16);
    expect(() => parseCertTable(t)).toThrow(/outside the table/);
    expect(() => parseCertTable(Buffer.alloc(20))).toThrow(/terminating/);
    await expect(new ConfigfsTsmProvider({ root: path.join(tmp, "absent") }).getReport(Buffer.alloc(64))).rejects.toThrow(/configfs-tsm/);
  });
});
