// The manifest's egress: entries (firewall-vm/src/proxies/README.md § The manifest), in both forms:
// the user's file (tls.ca a file) and the canonical form the firewall checks (tls.caPem inline).
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { AirlockError } from "../errors.ts";
import { amdCertFixture, MILAN_CHAIN } from "../../../test/fixtures/index.ts";
import { scratchDir } from "../../../test/scratch.ts";
import { canonicalJson, canonicalManifest, loadManifest, validateCanonical, type Egress } from "./index.ts";

const PINS = { firewall: "a".repeat(96), sandbox: "b".repeat(96), broker: "c".repeat(64) };
const SPKI = "d".repeat(64);

function roomWith(egressYaml: string): string {
  const dir = scratchDir("airlock-egress-");
  mkdirSync(path.join(dir, "workload"));
  writeFileSync(path.join(dir, "workload/run.sh"), "#!/bin/sh\necho hi\n");
  mkdirSync(path.join(dir, "certs"));
  copyFileSync(amdCertFixture("milan", "ark"), path.join(dir, "certs/ca.pem"));
  copyFileSync(MILAN_CHAIN, path.join(dir, "certs/chain.pem"));
  writeFileSync(path.join(dir, "certs/key-and-cert.pem"), `-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n${readFileSync(amdCertFixture("milan", "ark"), "utf8")}`);
  writeFileSync(path.join(dir, "certs/garbage.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  const file = path.join(dir, "room.yaml");
  writeFileSync(file, `apiVersion: airlock/v1\nname: r\nworkload: {bundle: ./workload, command: [/bin/sh, run.sh]}\negress:\n${egressYaml}`);
  return file;
}

function problems(fn: () => unknown, code = "MANIFEST_INVALID"): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AirlockError);
    expect((err as AirlockError).code).toBe(code);
    return (err as AirlockError).message;
  }
  throw new Error("accepted");
}

/** The canonical form of a room file, through JSON as the firewall gets it. */
function canonicalOf(file: string): Record<string, unknown> {
  return JSON.parse(canonicalJson(canonicalManifest(loadManifest(file), PINS))) as Record<string, unknown>;
}

/** A canonical room whose egress list is replaced. */
function canonicalWith(egress: unknown[]): unknown {
  return { ...canonicalOf(roomWith("  []\n")), egress };
}

const FULL = `  - name: api
    url: https://API.example.test:8443/v1/
    methods: [GET, POST]
    mode: trusted
    scope: MULTI_USER_PRIVATE
    tls: {ca: certs/ca.pem}
    rules: {maxRequestBytes: 1024, maxResponseBytes: 2048, headers: [content-type, accept]}
  - name: open-api
    url: http://data.example.test
    mode: open
    scope: DOMAIN_OWNED
    rules:
      headers: [content-type]
      format: json
      schema: {type: object, properties: {q: {type: string, maxLength: 10}}, required: [q]}
      deny: ["(?i)password", "\\\\d{16}"]
  - name: sealed
    url: https://vault.example.test/blobs/
    mode: secure
    tls: {spkiSha256: ${SPKI}}
  - name: plain
    url: http://plain.example.test/
`;

describe("manifest egress entries", () => {
  it("validates every field, fills the defaults and normalizes the URL", () => {
    const m = loadManifest(roomWith(FULL));
    const caPem = new X509Certificate(readFileSync(amdCertFixture("milan", "ark"))).toString();
    expect(m.egress).toEqual<Egress[]>([
      {
        name: "api",
        url: "https://api.example.test:8443/v1/",
        methods: ["GET", "POST"],
        mode: "trusted",
        scope: "MULTI_USER_PRIVATE",
        tls: { caPem },
        rules: { maxRequestBytes: 1024, maxResponseBytes: 2048, headers: ["content-type", "accept"] },
      },
      {
        name: "open-api",
        url: "http://data.example.test/",
        methods: ["GET"],
        mode: "open",
        scope: "DOMAIN_OWNED",
        rules: {
          maxRequestBytes: 64 * 1024,
          maxResponseBytes: 1024 * 1024,
          headers: ["content-type"],
          format: "json",
          schema: { type: "object", properties: { q: { type: "string", maxLength: 10 } }, required: ["q"] },
          deny: ["(?i)password", "\\d{16}"],
        },
      },
      { name: "sealed", url: "https://vault.example.test/blobs/", methods: ["GET"], mode: "secure", scope: "USER_PRIVATE", tls: { spkiSha256: SPKI }, rules: { maxRequestBytes: 65536, maxResponseBytes: 1048576, headers: [] } },
      { name: "plain", url: "http://plain.example.test/", methods: ["GET"], mode: "open", scope: "USER_PRIVATE", rules: { maxRequestBytes: 65536, maxResponseBytes: 1048576, headers: [], format: "bytes", deny: [] } },
    ]);
  });

  it("round trip: the canonical form holds exactly what validateCanonical accepts, every field kept", () => {
    const file = roomWith(FULL);
    const m = loadManifest(file);
    const canonical = canonicalOf(file);
    const back = validateCanonical(canonical);
    expect(back.egress).toEqual(m.egress);
    // and again: canonical → validated → canonical is a fixed point
    expect(JSON.parse(canonicalJson({ ...canonical, egress: back.egress }))).toEqual(canonical);
    expect((canonical.egress as { tls?: { caPem?: string } }[])[0]!.tls!.caPem).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
  });

  it("the digest covers the egress rules", async () => {
    const { manifestDigest } = await import("./index.ts");
    const a = manifestDigest(loadManifest(roomWith(FULL)), PINS);
    const b = manifestDigest(loadManifest(roomWith(FULL.replace("maxRequestBytes: 1024", "maxRequestBytes: 1025"))), PINS);
    expect(a).not.toEqual(b);
  });

  it("names, URLs and endpoints: one problem per field path, all listed at once", () => {
    const msg = problems(() =>
      loadManifest(
        roomWith(`  - {name: Bad_Name, url: "ftp://h/"}
  - {url: "https://u:p@h/"}
  - {name: a, url: "https://h/v1?x=1"}
  - {name: b, url: "https://h/v1"}
  - {name: c, url: "https://h/a/../b/"}
  - {name: c, url: "https://h/x/"}
  - {name: d, url: "https://h:443/x/"}
  - {name: e, url: "http://h/x/"}
  - {name: f, url: "http://h:3128/"}
  - {name: g, url: "https:///x/"}
  - {name: h, url: "https://h/y/", colour: red}
`),
      ),
    );
    expect(msg).toContain("egress[0].name: expected a lower-case name");
    expect(msg).toContain('egress[0].url: expected an http: or https: URL, got "ftp://h/"');
    expect(msg).toContain("egress[1].name: expected a non-empty string");
    expect(msg).toContain("egress[1].url: expected a URL without user name or password");
    expect(msg).toContain("egress[2].url: expected an absolute http(s) URL with no query or fragment");
    expect(msg).toContain('egress[3].url: expected a path prefix ending in "/"');
    expect(msg).toContain("egress[4].url: expected a normalized path prefix");
    expect(msg).toContain('egress[5].name: duplicate name "c"');
    expect(msg).toContain("egress[6].url: the same host, port and path prefix as egress[5]");
    expect(msg).toContain("egress[7].url: the same host, port and path prefix as egress[5]");
    expect(msg).toContain("egress[8].url: expected a port other than 3128");
    expect(msg).toContain("egress[9].url: expected a URL with a host");
    expect(msg).toContain("egress[10].colour: unknown field (allowed: name, url, methods, mode, scope, tls, rules)");
  });

  it("at most 64 entries", () => {
    const many = Array.from({ length: 65 }, (_, i) => `  - {name: e${i}, url: "http://h${i}.test/"}\n`).join("");
    expect(problems(() => loadManifest(roomWith(many)))).toContain("egress: expected at most 64 entries, got \"65 entries\"");
    expect(loadManifest(roomWith(many.split("\n").slice(0, 64).join("\n") + "\n")).egress).toHaveLength(64);
  });

  it("methods, mode and scope", () => {
    const msg = problems(() =>
      loadManifest(
        roomWith(`  - {name: a, url: "http://a.test/", methods: [GET, get, CONNECT, GET]}
  - {name: b, url: "http://b.test/", methods: []}
  - {name: c, url: "http://c.test/", methods: GET}
  - {name: d, url: "http://d.test/", mode: public}
  - {name: e, url: "http://e.test/", scope: SECRET}
`),
      ),
    );
    expect(msg).toContain('egress[0].methods[1]: expected one of GET | HEAD | POST | PUT | PATCH | DELETE, got "get"');
    expect(msg).toContain('egress[0].methods[2]: expected one of GET | HEAD | POST | PUT | PATCH | DELETE, got "CONNECT"');
    expect(msg).toContain("egress[0].methods[3]: duplicate method GET");
    expect(msg).toContain("egress[1].methods: expected a non-empty list of methods");
    expect(msg).toContain("egress[2].methods: expected a non-empty list of methods");
    expect(msg).toContain("egress[3].mode: expected one of secure | trusted | open");
    expect(msg).toContain("egress[4].scope: expected one of PUBLIC | DOMAIN_OWNED | USER_PRIVATE | MULTI_USER_PRIVATE | SEALED");
  });

  it("tls: https only, exactly one pin, a CA file holding one PEM certificate; trusted needs https; https needs a pin", () => {
    const msg = problems(() =>
      loadManifest(
        roomWith(`  - {name: a, url: "http://a.test/", tls: {spkiSha256: ${SPKI}}}
  - {name: b, url: "https://b.test/", tls: {ca: certs/ca.pem, spkiSha256: ${SPKI}}}
  - {name: c, url: "https://c.test/", tls: {}}
  - {name: d, url: "https://d.test/", tls: {spkiSha256: ${SPKI.toUpperCase()}}}
  - {name: e, url: "https://e.test/", tls: {ca: certs/none.pem}}
  - {name: f, url: "https://f.test/", tls: {ca: certs/chain.pem}}
  - {name: g, url: "https://g.test/", tls: {ca: certs/key-and-cert.pem}}
  - {name: h, url: "https://h.test/", tls: {ca: certs/garbage.pem}}
  - {name: i, url: "http://i.test/", mode: trusted}
  - {name: j, url: "https://j.test/", mode: trusted}
  - {name: k, url: "https://k.test/", tls: {caPem: x}}
`),
      ),
    );
    expect(msg).toContain("egress[0].tls: expected no tls on an http: URL");
    expect(msg).toContain("egress[1].tls: expected exactly one pin: ca or spkiSha256, not both");
    expect(msg).toContain("egress[2].tls: expected a pin: ca (a CA certificate file, PEM) or spkiSha256");
    expect(msg).toContain("egress[3].tls.spkiSha256: expected 64 lower-case hex digits");
    expect(msg).toContain("egress[4].tls.ca: expected an existing file (relative to the manifest's folder)");
    expect(msg).toContain("egress[5].tls.ca: expected a file holding exactly one PEM certificate (-----BEGIN CERTIFICATE-----), found 2");
    expect(msg).toContain("egress[6].tls.ca: expected a file holding a certificate with no private key beside it");
    expect(msg).toContain("egress[7].tls.ca: expected a file holding a PEM certificate that parses");
    expect(msg).toContain("egress[8].url: expected an https: URL (a trusted endpoint is reached over TLS, pinned)");
    expect(msg).not.toContain("egress[8].tls");
    // The firewall carries no CA bundle: any https: endpoint names its pin, whatever its mode.
    expect(msg).toContain("egress[9].tls: expected a pin for an https: endpoint: tls.ca or tls.spkiSha256");
    expect(msg).toContain("egress[10].tls.caPem: unknown field (allowed: ca, spkiSha256)");
  });

  it("rules: sizes with their bounds, header names, and format/schema/deny in open mode only", () => {
    const msg = problems(() =>
      loadManifest(
        roomWith(`  - name: a
    url: "http://a.test/"
    rules: {maxRequestBytes: 67108865, maxResponseBytes: -1, headers: [Content-Type, "x y", content-type, host, proxy-authorization, te, x-ok, x-ok], limit: 3}
  - name: b
    url: "https://b.test/"
    mode: trusted
    tls: {spkiSha256: ${SPKI}}
    rules: {format: json, schema: {type: object}, deny: [x]}
  - name: c
    url: "http://c.test/"
    mode: secure
    rules: {format: bytes}
  - name: d
    url: "http://d.test/"
    rules: {format: yaml, schema: [1], deny: ["(", "", 3, "${"a".repeat(257)}"]}
  - name: e
    url: "http://e.test/"
    rules: {format: text, schema: {type: object}}
  - name: f
    url: "http://f.test/"
    rules: {deny: [${Array.from({ length: 33 }, () => "x").join(", ")}]}
`),
      ),
    );
    expect(msg).toContain("egress[0].rules.maxRequestBytes: expected an integer from 0 to 67108864");
    expect(msg).toContain("egress[0].rules.maxResponseBytes: expected an integer from 0 to 67108864");
    expect(msg).toContain('egress[0].rules.headers[0]: expected a lower-case header name');
    expect(msg).toContain('egress[0].rules.headers[1]: expected a lower-case header name');
    expect(msg).not.toContain("egress[0].rules.headers[2]");
    expect(msg).toContain('egress[0].rules.headers[3]: expected a header other than host, connection, content-length, transfer-encoding');
    expect(msg).toContain("egress[0].rules.headers[4]: expected a header other than");
    expect(msg).toContain("egress[0].rules.headers[5]: expected a header other than");
    expect(msg).toContain('egress[0].rules.headers[7]: duplicate header "x-ok"');
    expect(msg).toContain("egress[0].rules.limit: unknown field");
    expect(msg).toContain("egress[1].rules.format: expected no format: format, schema and deny check open request bodies only; a trusted endpoint's request bodies leave over TLS");
    expect(msg).toContain("egress[1].rules.schema: expected no schema");
    expect(msg).toContain("egress[1].rules.deny: expected no deny");
    expect(msg).toContain("egress[2].rules.format: expected no format: format, schema and deny check open request bodies only; a secure endpoint's request bodies leave sealed");
    expect(msg).toContain("egress[3].rules.format: expected one of bytes | text | json | csv");
    expect(msg).toContain("egress[3].rules.schema: expected a mapping of plain JSON values");
    expect(msg).toContain('egress[3].rules.deny[0]: expected a JavaScript regular expression (flag u; a leading (?i) ignores case): Invalid regular expression');
    expect(msg).toContain('egress[3].rules.deny[1]: expected a regular expression of 1 to 256 characters, got ""');
    expect(msg).toContain("egress[3].rules.deny[2]: expected a regular expression of 1 to 256 characters, got 3");
    expect(msg).toContain("egress[3].rules.deny[3]: expected a regular expression of 1 to 256 characters");
    expect(msg).toContain("egress[4].rules.schema: expected no schema unless format is json or csv (format is text)");
    expect(msg).toContain("egress[5].rules.deny: expected at most 32 patterns");
  });

  it("schema: bounded in size and depth", () => {
    let deep = "{type: string}";
    for (let i = 0; i < 40; i++) deep = `{type: array, items: ${deep}}`;
    const msg = problems(() =>
      loadManifest(
        roomWith(`  - {name: a, url: "http://a.test/", rules: {format: json, schema: ${deep}}}
  - {name: b, url: "http://b.test/", rules: {format: json, schema: {enum: [${Array.from({ length: 3000 }, (_, i) => `v${i}`).join(", ")}]}}}
`),
      ),
    );
    expect(msg).toContain("egress[0].rules.schema: expected a mapping of plain JSON values (a JSON Schema subset; at most 32 levels deep)");
    expect(msg).toContain("egress[1].rules.schema: expected a schema of at most 16384 bytes as JSON");
  });

  it("the canonical form: the CA inline as caPem (normalized), no file read, the same rules", () => {
    const caPem = new X509Certificate(readFileSync(amdCertFixture("milan", "ark"))).toString();
    const ok = validateCanonical(canonicalWith([{ name: "a", url: "https://a.test/", methods: ["GET"], mode: "trusted", scope: "USER_PRIVATE", tls: { caPem }, rules: { maxRequestBytes: 1, maxResponseBytes: 2, headers: [] } }]));
    expect(ok.egress[0]!.tls).toEqual({ caPem });
    const msg = problems(
      () =>
        validateCanonical(
          canonicalWith([
            { name: "a", url: "https://a.test/", mode: "trusted", tls: { ca: "certs/ca.pem" } },
            { name: "b", url: "https://b.test/", mode: "trusted", tls: { caPem: caPem.replace(/\n/g, "\r\n") } },
            { name: "c", url: "https://c.test/", tls: { caPem: readFileSync(MILAN_CHAIN, "utf8") } },
            { name: "d", url: "https://d.test/", mode: "secure", rules: { format: "bytes", deny: [] } },
            { name: "e", url: "http://e.test/", rules: { schema: { type: "object" }, format: "json", deny: ["("] } },
            { name: "f", url: "http://f.test/", tls: { spkiSha256: SPKI } },
          ]),
        ),
      "GUEST_PROTOCOL",
    );
    expect(msg).toContain("egress[0].tls.ca: unknown field (allowed: caPem, spkiSha256)");
    expect(msg).toContain("egress[0].tls: expected a pin: caPem (a PEM certificate) or spkiSha256");
    expect(msg).toContain("egress[1].tls.caPem: expected the certificate in its normalized PEM form");
    expect(msg).toContain("egress[2].tls.caPem: expected exactly one PEM certificate");
    expect(msg).toContain("egress[3].rules.format: expected no format");
    expect(msg).toContain("egress[3].rules.deny: expected no deny");
    expect(msg).toContain("egress[4].rules.deny[0]: expected a JavaScript regular expression");
    expect(msg).toContain("egress[5].tls: expected no tls on an http: URL");
  });

  it("a room with no egress entries keeps its canonical form (egress: [])", () => {
    const canonical = canonicalOf(roomWith("  []\n"));
    expect(canonical.egress).toEqual([]);
    expect(validateCanonical(canonical).egress).toEqual([]);
  });
});

describe("manifest governance endpoints", () => {
  const withGovernance = (yaml: string): string => {
    const file = roomWith("  []\n");
    writeFileSync(file, `${readFileSync(file, "utf8")}governance:\n${yaml}`);
    return file;
  };

  it("takes consent, audit and telemetry URLs, one pin for all, required once any is https", () => {
    const m = loadManifest(withGovernance(`  consent: http://gov.test/c\n  audit: https://gov.test/a\n  telemetry: https://tel.test/t\n  tls: {spkiSha256: ${SPKI}}\n`));
    expect(m.governance).toEqual({ consent: "http://gov.test/c", audit: "https://gov.test/a", telemetry: "https://tel.test/t", tls: { spkiSha256: SPKI } });
    // The canonical form holds the same, and the firewall's validator takes it.
    expect(validateCanonical(JSON.parse(canonicalJson(canonicalManifest(m, PINS)))).governance).toEqual(m.governance);
    const msg = problems(() => loadManifest(withGovernance("  audit: https://gov.test/a\n  telemetry: ftp://tel.test/t\n  extra: x\n")));
    expect(msg).toContain("governance.telemetry: expected an http(s) URL whose host is a DNS name or an IPv4 address");
    expect(msg).toContain("governance.tls: expected a pin for the https: governance endpoints");
    expect(msg).toContain("governance.extra: unknown field (allowed: consent, audit, telemetry, tls)");
    expect(problems(() => loadManifest(withGovernance(`  audit: http://gov.test/a\n  tls: {spkiSha256: ${SPKI}}\n`)))).toContain("governance.tls: expected no tls unless a governance endpoint is an https: URL");
  });
});
