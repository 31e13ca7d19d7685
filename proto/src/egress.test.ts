import { describe, expect, it } from "vitest";
import { compileDenyPattern, egressUrlProblem, firewallAddress, isFramingHeader, MAX_EGRESS_ENTRIES, normalizeEgressUrl, parseEgressUrl, PROXY_PORT, sandboxPort } from "./egress.ts";

describe("egress endpoints", () => {
  it("parses scheme, host, port (default 80/443) and path prefix", () => {
    expect(parseEgressUrl("https://api.example.test:8443/v1/")).toEqual({ scheme: "https", host: "api.example.test", port: 8443, pathPrefix: "/v1/" });
    expect(parseEgressUrl("https://api.example.test/v1/")).toEqual({ scheme: "https", host: "api.example.test", port: 443, pathPrefix: "/v1/" });
    expect(parseEgressUrl("http://10.1.2.3")).toEqual({ scheme: "http", host: "10.1.2.3", port: 80, pathPrefix: "/" });
    expect(parseEgressUrl("HTTP://API.Example.TEST:80/a/b/")).toEqual({ scheme: "http", host: "api.example.test", port: 80, pathPrefix: "/a/b/" });
    expect(normalizeEgressUrl("https://API.example.test:443")).toBe("https://api.example.test/");
  });

  it("refuses what is not an endpoint URL, saying what was expected", () => {
    const bad: [string, RegExp][] = [
      ["ftp://h/", /http: or https:/],
      ["https://user:pw@h/", /without user name/],
      ["https://h/v1/?q=1", /no query or fragment/],
      ["https://h/v1/#f", /no query or fragment/],
      ["https:///v1/", /with a host/],
      ["https://h/v1", /ending in "\/"/],
      ["https://h/a/../b/", /normalized/],
      ["https://h/a/./b/", /normalized/],
      ["https://h/a//b/", /normalized/],
      ["https://h/%2e%2e/", /no percent-encoding/],
      ["https://h/a b/", /no percent-encoding/],
      ["https://[::1]/", /IPv6/],
      ["https://h:0/", /port from 1 to 65535/],
      ["https://h:70000/", /port from 1 to 65535/],
      ["https://h:x/", /numeric port/],
      ["https://bad_host/", /DNS name/],
      ["https://0x7f.1/", /written as it resolves \(127\.0\.0\.1\)/],
      ["relative/path/", /absolute/],
      [`https://h/${"a".repeat(2050)}/`, /at most 2048/],
    ];
    for (const [url, re] of bad) {
      expect(egressUrlProblem(url), url).toMatch(re);
      expect(() => parseEgressUrl(url), url).toThrow(/egress url: expected/);
    }
    expect(egressUrlProblem("https://api.example.test:8443/v1/")).toBeNull();
  });

  it("maps each endpoint to its sandbox port: 80 for https:443 and http:80, the URL's otherwise", () => {
    expect(sandboxPort({ url: "https://h/" })).toBe(80);
    expect(sandboxPort({ url: "http://h/" })).toBe(80);
    expect(sandboxPort({ url: "https://h:8443/" })).toBe(8443);
    expect(sandboxPort({ url: "http://h:443/" })).toBe(443);
    expect(sandboxPort({ url: "https://h:80/" })).toBe(80);
    expect(PROXY_PORT).toBe(3128);
  });

  it("gives endpoint i the firewall address 10.0.2.(100+i), for at most 100 endpoints", () => {
    expect(firewallAddress(0)).toBe("10.0.2.100");
    expect(firewallAddress(63)).toBe("10.0.2.163");
    expect(firewallAddress(99)).toBe("10.0.2.199");
    expect(MAX_EGRESS_ENTRIES).toBeLessThanOrEqual(100);
    for (const i of [100, -1, 1.5, Number.NaN]) expect(() => firewallAddress(i)).toThrow(/outside 0 … 99/);
  });

  it("knows the framing headers and compiles deny patterns with u (and i for a leading (?i))", () => {
    for (const h of ["host", "Connection", "content-length", "transfer-encoding", "te", "trailer", "upgrade", "keep-alive", "proxy-authorization", "Proxy-Connection"]) expect(isFramingHeader(h), h).toBe(true);
    for (const h of ["content-type", "accept", "authorization", "user-agent"]) expect(isFramingHeader(h), h).toBe(false);
    expect(compileDenyPattern("(?i)password").test("PassWord")).toBe(true);
    expect(compileDenyPattern("password").test("PassWord")).toBe(false);
    expect(compileDenyPattern("\\p{L}").flags).toBe("u");
    expect(() => compileDenyPattern("(")).toThrow(SyntaxError);
    expect(() => compileDenyPattern("\\q")).toThrow(SyntaxError);
  });
});
