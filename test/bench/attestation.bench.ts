// Report verification latency: cold (a new verifier: parse the certificates, verify the ARK, ASK and
// VCEK RSA-PSS signatures, then the report) and with the chain cached (a long-lived verifier: the
// report's ECDSA signature and the checks only). The real Milan report from the fixtures; plus a
// key-broker round trip (nonce, emulated report, release, unwrap) over loopback HTTP.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { requestKey } from "../../proto/src/attestation/kbs-client.ts";
import { encodePolicy } from "../../proto/src/attestation/report.ts";
import { EmulatedPsp } from "../../host-tools/src/attestation/emulated-psp.ts";
import { ReportVerifier } from "../../host-tools/src/attestation/verify.ts";
import { startKbs } from "../../host-tools/src/kbs/server.ts";
import { medianMs } from "./harness.ts";
import { MILAN_CHAIN, MILAN_REPORT, MILAN_VCEK } from "../fixtures/index.ts";
import type { Reporter } from "./harness.ts";


export default async function (report: Reporter): Promise<void> {
  const evidence = {
    report: readFileSync(MILAN_REPORT),
    vcek: readFileSync(MILAN_VCEK),
    chain: readFileSync(MILAN_CHAIN, "utf8"),
  };
  const at = new Date("2026-06-01T00:00:00Z");
  const check = (v: ReportVerifier): void => {
    if (!v.verify(evidence, { at }).ok) throw new Error("the Milan fixture did not verify");
  };
  const cold = await medianMs(() => check(new ReportVerifier()), 21, 2);
  report.figure("verify-report cold (new verifier, full chain)", cold, "ms", "median of 21, Milan fixture");
  const warm = new ReportVerifier();
  check(warm);
  const cached = await medianMs(() => check(warm), 201, 10);
  report.figure("verify-report chain cached", cached, "ms", "median of 201, Milan fixture");
  report.ratio("cold / cached", cold / cached);

  const tmp = mkdtempSync(path.join(tmpdir(), "airlock-bench-attest-"));
  try {
    const psp = EmulatedPsp.open(path.join(tmpdir(), "airlock-test-emulated-psp"));
    const launch = { measurement: randomBytes(48), policy: encodePolicy({ smt: true }), reportId: randomBytes(32) };
    const kbs = await startKbs({ stateDir: tmp, masterKey: randomBytes(32) });
    try {
      kbs.store.put("k", randomBytes(32), { measurements: [launch.measurement.toString("hex")], trustRoots: [psp.arkPem] });
      const provider = { kind: "emulated" as const, getReport: async (rd: Buffer) => psp.evidence(launch, { reportData: rd, vmpl: 0 }) };
      const release = await medianMs(() => requestKey({ endpoint: kbs.endpoint, keyId: "k", provider, brokerPublicKey: kbs.publicKey }), 21, 2);
      report.figure("kbs key release round trip (loopback, emulated report)", release, "ms", "median of 21");
    } finally {
      await kbs.close();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
