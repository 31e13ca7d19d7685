// The age header (age-encryption.org/v1): version line, stanzas, and an HMAC over all of it.
// Parsing is strict and bounded: the header comes from files anyone may have written.
import { createHmac, hkdfSync } from "node:crypto";
import { AirlockError } from "../errors.ts";
import type { Stanza } from "./keys.ts";
import { b64Decode, b64Encode } from "./primitives.ts";
import type { ByteReader } from "./reader.ts";

export const VERSION_LINE = "age-encryption.org/v1";
const MAX_LINE = 16 * 1024;
const MAX_HEADER = 1024 * 1024;
const MAX_STANZAS = 4096;

export interface ParsedHeader {
  stanzas: Stanza[];
  mac: Buffer;
  /** The header bytes the MAC covers: everything up to and including "---". */
  macInput: Buffer;
}

function bad(what: string): AirlockError {
  return new AirlockError("CRYPTO", `not a valid age file: ${what}`);
}

export function headerMac(fileKey: Buffer, macInput: Buffer): Buffer {
  const key = Buffer.from(hkdfSync("sha256", fileKey, Buffer.alloc(0), "header", 32));
  return createHmac("sha256", key).update(macInput).digest();
}

/** The header text with its MAC line. */
export function encodeHeader(stanzas: Stanza[], fileKey: Buffer): Buffer {
  let text = `${VERSION_LINE}\n`;
  for (const s of stanzas) {
    text += `-> ${s.args.join(" ")}\n`;
    const body = b64Encode(s.body);
    for (let i = 0; i < body.length; i += 64) text += `${body.slice(i, i + 64)}\n`;
    if (body.length % 64 === 0) text += "\n"; // a short (here empty) line ends the body
  }
  text += "---";
  const macInput = Buffer.from(text, "latin1");
  return Buffer.concat([macInput, Buffer.from(` ${b64Encode(headerMac(fileKey, macInput))}\n`, "latin1")]);
}

function printable(line: Buffer): boolean {
  for (const c of line) if (c < 0x20 || c > 0x7e) return false;
  return true;
}

export async function parseHeader(r: ByteReader): Promise<ParsedHeader> {
  const raw: Buffer[] = [];
  let size = 0;
  const next = async (): Promise<string> => {
    const line = await r.readLine(
      MAX_LINE,
      () => bad("a header line is too long"),
      () => bad("the file ends inside the header (truncated)"),
    );
    if (line === null) throw bad("the file ends inside the header (truncated)");
    if (!printable(line)) throw bad("the header contains non-ASCII or control characters");
    size += line.length + 1;
    if (size > MAX_HEADER) throw bad("the header is larger than 1 MiB");
    raw.push(line, Buffer.from("\n"));
    return line.toString("latin1");
  };

  if ((await next()) !== VERSION_LINE) {
    throw new AirlockError("CRYPTO", `not a valid age file: the first line is not "${VERSION_LINE}"`, { hint: "is this file in the age format?" });
  }
  const stanzas: Stanza[] = [];
  for (;;) {
    const line = await next();
    if (line.startsWith("--- ")) {
      const mac = b64Decode(line.slice(4));
      if (!mac || mac.length !== 32) throw bad("the header MAC line is malformed");
      raw.pop(); // the "\n" of the MAC line
      raw.pop(); // the MAC line itself: only its "---" is covered
      raw.push(Buffer.from("---"));
      return { stanzas, mac, macInput: Buffer.concat(raw) };
    }
    if (!line.startsWith("-> ")) throw bad(`header line ${stanzas.length + 2} is neither a stanza ("-> …") nor the MAC line ("--- …")`);
    const args = line.slice(3).split(" ");
    if (args.some((a) => a.length === 0)) throw bad("a stanza has an empty argument");
    let body = "";
    for (;;) {
      const b = await next();
      if (b.length > 64 || !/^[A-Za-z0-9+/]*$/.test(b)) throw bad("a stanza body line is not unpadded base64 of at most 64 columns");
      body += b;
      if (b.length < 64) break;
    }
    const decoded = b64Decode(body);
    if (!decoded) throw bad("a stanza body is not canonical base64");
    stanzas.push({ args, body: decoded });
    if (stanzas.length > MAX_STANZAS) throw bad("the header has too many stanzas");
  }
}
