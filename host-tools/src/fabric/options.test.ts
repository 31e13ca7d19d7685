import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkVmSpecs, parseConfigFile, parseVmOption } from "./options.ts";

describe("vhost-device-vsock option syntax", () => {
  it("parses --vm with and without groups", () => {
    expect(parseVmOption("guest-cid=3,socket=/tmp/v.sock,uds-path=/tmp/v.vsock,groups=a+b")).toEqual({ cid: 3, socket: "/tmp/v.sock", udsPath: "/tmp/v.vsock", groups: ["a", "b"] });
    expect(parseVmOption("socket=/s,uds-path=/u,guest-cid=4").groups).toEqual(["default"]);
    // vhost-device-vsock's tuning keys are accepted (and checked) for drop-in compatibility.
    expect(parseVmOption("guest-cid=4,socket=/s,uds-path=/u,tx-buffer-size=65536,queue-size=1024").cid).toBe(4);
    expect(() => parseVmOption("guest-cid=4,socket=/s,uds-path=/u,tx-buffer-size=big")).toThrow(AirlockError);
  });

  for (const bad of ["guest-cid=2,socket=/s,uds-path=/u", "guest-cid=x,socket=/s,uds-path=/u", "guest-cid=3,uds-path=/u", "guest-cid=3,socket=/s,uds-path=/u,groups=a+", "guest-cid=3,socket=/s,uds-path=/u,color=red", "guest-cid=3,guest-cid=4,socket=/s,uds-path=/u", "junk"]) {
    it(`rejects ${bad}`, () => {
      expect(() => parseVmOption(bad)).toThrow(AirlockError);
    });
  }

  it("rejects duplicate CIDs and paths", () => {
    const a = parseVmOption("guest-cid=3,socket=/s1,uds-path=/u1");
    expect(() => checkVmSpecs([a, parseVmOption("guest-cid=3,socket=/s2,uds-path=/u2")])).toThrow(/more than one VM/);
    expect(() => checkVmSpecs([a, parseVmOption("guest-cid=4,socket=/s1,uds-path=/u2")])).toThrow(/more than one VM/);
  });

  it("reads vhost-device-vsock's YAML config", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "airlock-opts-"));
    try {
      const f = path.join(dir, "c.yaml");
      writeFileSync(f, "vms:\n  - guest_cid: 3\n    socket: /tmp/a\n    uds_path: /tmp/b\n    tx_buffer_size: 65536\n    groups: g1+g2\n");
      expect(parseConfigFile(f)).toEqual([{ cid: 3, socket: "/tmp/a", udsPath: "/tmp/b", groups: ["g1", "g2"] }]);
      writeFileSync(f, "vms: []\n");
      expect(() => parseConfigFile(f)).toThrow(AirlockError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
