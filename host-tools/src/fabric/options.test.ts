import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { checkVmSpecs, parseConfigFile, parseVmOption } from "./options.ts";

describe("vhost-device-vsock option syntax", () => {
  it("parses --vm with and without groups", () => {
    expect(parseVmOption("guest-cid=3,socket=/tmp/v.sock,uds-path=/tmp/v.vsock,groups=a+b")).toEqual({ cid: 3, socket: "/tmp/v.sock", udsPath: "/tmp/v.vsock", groups: ["a", "b"], hostPorts: [] });
    expect(parseVmOption("socket=/s,uds-path=/u,guest-cid=4").groups).toEqual(["default"]);
    // vhost-device-vsock's tuning keys are accepted (and checked) for drop-in compatibility.
    expect(parseVmOption("guest-cid=4,socket=/s,uds-path=/u,tx-buffer-size=65536,queue-size=1024").cid).toBe(4);
    expect(() => parseVmOption("guest-cid=4,socket=/s,uds-path=/u,tx-buffer-size=big")).toThrow(AirlockError);
  });

  it("parses host-ports (deny-by-default: none unless listed)", () => {
    expect(parseVmOption("guest-cid=3,socket=/s,uds-path=/u").hostPorts).toEqual([]);
    expect(parseVmOption("guest-cid=3,socket=/s,uds-path=/u,groups=g,host-ports=1025+1024").hostPorts).toEqual([1024, 1025]);
    expect(parseVmOption("host-ports=5000,guest-cid=3,socket=/s,uds-path=/u").hostPorts).toEqual([5000]);
    expect(parseVmOption("guest-cid=3,socket=/s,uds-path=/u,host-ports=0+4294967294+0").hostPorts).toEqual([0, 4294967294]);
    for (const bad of ["", "x", "1024+", "+1024", "1024,1025", "-1", "1.5", "4294967295", "99999999999"]) {
      expect(() => parseVmOption(`guest-cid=3,socket=/s,uds-path=/u,host-ports=${bad}`), bad).toThrow(AirlockError);
    }
    expect(() => parseVmOption("guest-cid=3,socket=/s,uds-path=/u,host-ports=1,host-ports=2")).toThrow(/given twice/);
  });

  it("checks hostPorts of specs given to the fabric directly", () => {
    expect(() => checkVmSpecs([{ cid: 3, socket: "/s", udsPath: "/u", groups: ["g"], hostPorts: [1024] }])).not.toThrow();
    expect(() => checkVmSpecs([{ cid: 3, socket: "/s", udsPath: "/u", groups: ["g"] }])).not.toThrow();
    expect(() => checkVmSpecs([{ cid: 3, socket: "/s", udsPath: "/u", groups: ["g"], hostPorts: [0x1_0000_0000] }])).toThrow(AirlockError);
    expect(() => checkVmSpecs([{ cid: 3, socket: "/s", udsPath: "/u", groups: ["g"], hostPorts: [1.5] }])).toThrow(AirlockError);
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
      expect(parseConfigFile(f)).toEqual([{ cid: 3, socket: "/tmp/a", udsPath: "/tmp/b", groups: ["g1", "g2"], hostPorts: [] }]);
      // host_ports: a YAML list, a '+'-joined string like groups, or one number.
      writeFileSync(
        f,
        [
          "vms:",
          "  - {guest_cid: 3, socket: /tmp/a3, uds_path: /tmp/b3, host_ports: [1024, 1027, 1025]}",
          "  - {guest_cid: 4, socket: /tmp/a4, uds_path: /tmp/b4, host_ports: 1024+1026}",
          "  - {guest_cid: 5, socket: /tmp/a5, uds_path: /tmp/b5, host_ports: 5000}",
          "  - {guest_cid: 6, socket: /tmp/a6, uds_path: /tmp/b6, host_ports: []}",
          "",
        ].join("\n"),
      );
      expect(parseConfigFile(f).map((v) => v.hostPorts)).toEqual([[1024, 1025, 1027], [1024, 1026], [5000], []]);
      for (const bad of ["[1024, x]", "'1024+'", "{a: 1}", "-3", "[4294967295]"]) {
        writeFileSync(f, `vms:\n  - {guest_cid: 3, socket: /tmp/a, uds_path: /tmp/b, host_ports: ${bad}}\n`);
        expect(() => parseConfigFile(f), bad).toThrow(AirlockError);
      }
      writeFileSync(f, "vms: []\n");
      expect(() => parseConfigFile(f)).toThrow(AirlockError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
