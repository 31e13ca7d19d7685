import { describe, expect, it } from "vitest";
import { AirlockError } from "../../../proto/src/errors.ts";
import { DATA_SCOPES, ScopeTracker, checkFormat, decideOutput, inspectOpenOutput, isSafeOpenName, modeMayCarry, parseCsv, parseSchema } from "./index.ts";
import type { DataScope, OutputRequest } from "./index.ts";

const file = (text: string, path = "out.txt") => ({ path, content: Buffer.from(text) });
const req = (o: Partial<OutputRequest>): OutputRequest => ({ name: "o", mode: "open", maxBytes: 1000, overLimit: false, ...o });

describe("ScopeTracker", () => {
  it("rises to the strictest scope read and never falls", () => {
    const t = new ScopeTracker();
    expect(t.current).toBe("PUBLIC");
    expect(t.observe("USER_PRIVATE", "input a")).toEqual({ from: "PUBLIC", to: "USER_PRIVATE", source: "input a" });
    expect(t.observe("DOMAIN_OWNED", "input b")).toBeNull();
    expect(t.current).toBe("USER_PRIVATE");
    t.observe("SEALED", "input c");
    t.observe("PUBLIC", "input d");
    expect(t.current).toBe("SEALED");
    expect(t.raises.map((r) => r.to)).toEqual(["USER_PRIVATE", "SEALED"]);
    expect(() => t.observe("SECRET" as DataScope, "x")).toThrow(AirlockError);
  });
});

describe("mode ceilings", () => {
  it("open carries up to DOMAIN_OWNED, trusted up to MULTI_USER_PRIVATE, secure everything", () => {
    const table = DATA_SCOPES.map((s) => [s, modeMayCarry("open", s), modeMayCarry("trusted", s), modeMayCarry("secure", s)]);
    expect(table).toEqual([
      ["PUBLIC", true, true, true],
      ["DOMAIN_OWNED", true, true, true],
      ["USER_PRIVATE", false, true, true],
      ["MULTI_USER_PRIVATE", false, true, true],
      ["SEALED", false, false, true],
    ]);
  });
});

describe("decideOutput and inspectOpenOutput", () => {
  it("open: inspected up to DOMAIN_OWNED, withheld above", () => {
    expect(decideOutput(req({}), "DOMAIN_OWNED")).toMatchObject({ decision: "release" });
    const d = decideOutput(req({}), "USER_PRIVATE");
    expect(d).toMatchObject({ decision: "withhold", reason: expect.stringMatching(/read USER_PRIVATE data; open mode carries at most DOMAIN_OWNED/) });
  });

  it("an output over its limit is withheld whatever its mode, and the reason names only the manifest's limit", () => {
    for (const mode of ["open", "trusted", "secure"] as const) {
      const d = decideOutput(req({ mode, recipient: "age1x", roomRecipient: "age1room", maxBytes: 3, overLimit: true }), "PUBLIC");
      expect(d).toEqual({ decision: "withhold", reason: "output o exceeded its size limit of 3 bytes" });
    }
  });

  it("secure seals to the room (withheld without a room identity); trusted to its recipient up to MULTI_USER_PRIVATE", () => {
    expect(decideOutput(req({ mode: "secure", roomRecipient: "age1room" }), "SEALED")).toMatchObject({ decision: "encrypt", to: "room", recipient: "age1room" });
    expect(decideOutput(req({ mode: "secure" }), "PUBLIC")).toMatchObject({ decision: "withhold", reason: expect.stringMatching(/no room identity/) });
    expect(decideOutput(req({ mode: "trusted", recipient: "age1abc" }), "MULTI_USER_PRIVATE")).toMatchObject({ decision: "encrypt", to: "collaborator", recipient: "age1abc" });
    expect(decideOutput(req({ mode: "trusted", recipient: "age1abc" }), "SEALED")).toMatchObject({ decision: "withhold" });
    expect(decideOutput(req({ mode: "trusted" }), "PUBLIC")).toMatchObject({ decision: "withhold", reason: expect.stringMatching(/no recipient/) });
  });

  it("open outputs: safe names, the declared format; reasons never quote the workload", () => {
    expect(inspectOpenOutput("o", "json", [file('{"n":1}', "a.json"), file("[]", "dir/b.json")])).toBeNull();
    const bad = inspectOpenOutput("o", "json", [file("{nope", "SECRET-NAME.json")]);
    expect(bad).toMatch(/not valid json/);
    expect(bad).not.toContain("SECRET");
    for (const name of ["\u001b[2Jx.json", "a b", ".hidden", "x/../y", "caf\u00e9", "a".repeat(101), "a/b/c/d/e/f/g/h/i"]) {
      const why = inspectOpenOutput("o", "text", [file("ok", name)]);
      expect(why, name).toMatch(/outside the safe set/);
      expect(why).not.toContain(name);
    }
    expect(isSafeOpenName("counts-2.csv")).toBe(true);
  });
});

describe("formats", () => {
  it("JSON must parse; text must be UTF-8 without control characters", () => {
    expect(checkFormat(Buffer.from("[1,2]"), "json")).toBeNull();
    expect(checkFormat(Buffer.from("[1,"), "json")).toMatch(/not JSON/);
    expect(checkFormat(Buffer.from([0xff, 0xfe]), "text")).toMatch(/UTF-8/);
    expect(checkFormat(Buffer.from("ok\nline\ttab\r\n"), "text")).toBeNull();
    expect(checkFormat(Buffer.from("bell\u0007"), "text")).toMatch(/control/);
    expect(checkFormat(Buffer.from([0, 1, 2]), "bytes")).toBeNull();
  });

  it("CSV needs a header and rows of the header's width", () => {
    expect(checkFormat(Buffer.from("word,count\nthe,3\n\"a,b\",2\r\n"), "csv")).toBeNull();
    expect(checkFormat(Buffer.from(""), "csv")).toMatch(/empty/);
    expect(checkFormat(Buffer.from("a,a\n1,2\n"), "csv")).toMatch(/repeated/);
    expect(checkFormat(Buffer.from("a,b\n1\n"), "csv")).toMatch(/row 2 has 1 fields, the header has 2/);
    expect(checkFormat(Buffer.from('a\n"open\n'), "csv")).toMatch(/not closed/);
    expect(parseCsv('x,"say ""hi"""\n')).toEqual({ rows: [["x", 'say "hi"']] });
    expect(parseCsv("a,\n")).toEqual({ rows: [["a", ""]] });
  });

  it("checks JSON and CSV against a schema, closed to unknown fields by default", () => {
    const schema = parseSchema({
      type: "object",
      properties: { word: { type: "string", maxLength: 5 }, count: { type: "integer", minimum: 0 } },
      required: ["word", "count"],
    });
    const rows = parseSchema({ type: "array", items: schema, maxItems: 2 });
    expect(checkFormat(Buffer.from('[{"word":"a","count":1}]'), "json", rows)).toBeNull();
    expect(checkFormat(Buffer.from('[{"word":"a","count":1,"email":"x@y"}]'), "json", rows)).toMatch(/\$\[0\]: field "email" is not in the schema/);
    expect(checkFormat(Buffer.from('[{"word":"toolong","count":1}]'), "json", rows)).toMatch(/\$\[0\]\.word: longer than 5/);
    expect(checkFormat(Buffer.from('[{"word":"a","count":1.5}]'), "json", rows)).toMatch(/expected integer/);
    expect(checkFormat(Buffer.from("[{},{},{}]"), "json", rows)).toMatch(/more than 2 items/);
    expect(checkFormat(Buffer.from('[{"word":"a"}]'), "json", rows)).toMatch(/missing required field "count"/);

    expect(checkFormat(Buffer.from("count,word\n3,the\n"), "csv", schema)).toBeNull();
    expect(checkFormat(Buffer.from("word,count,email\nthe,3,x\n"), "csv", schema)).toMatch(/not in the schema: "email"/);
    expect(checkFormat(Buffer.from("word,count\nthe,three\n"), "csv", schema)).toMatch(/row 2, column "count": expected integer/);
    expect(checkFormat(Buffer.from("word,count\nthe,-1\n"), "csv", schema)).toMatch(/below 0/);
    expect(checkFormat(Buffer.from('[{"word":"a","count":1,"constructor":{}}]'), "json", rows)).toMatch(/field "constructor" is not in the schema/);
    expect(checkFormat(Buffer.from("word,count,__proto__\nthe,1,x\n"), "csv", schema)).toMatch(/not in the schema: "__proto__"/);
  });

  it("refuses malformed schemas with the field path", () => {
    expect(() => parseSchema({ type: "text" }, "outputs[0].schema")).toThrow(/outputs\[0\]\.schema\.type: expected object \| array/);
    expect(() => parseSchema({ properties: { a: { pattern: ".*" } } }, "s")).toThrow(/s\.properties\.a\.pattern/);
    expect(() => parseSchema({ maxLength: -1 })).toThrow(/non-negative integer/);
  });
});
