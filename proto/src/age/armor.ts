// ASCII armor (age's PEM-like form, padded base64 in 64 columns), streamed both ways.
import { AirlockError } from "../errors.ts";
import { ByteReader } from "./reader.ts";
import type { ByteSource } from "./reader.ts";

export const ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";
export const ARMOR_END = "-----END AGE ENCRYPTED FILE-----";
const COLUMNS = 64;
const LINE_BYTES = 48; // 48 bytes make exactly 64 base64 characters

export async function* armorEncode(source: ByteSource): AsyncGenerator<Buffer> {
  yield Buffer.from(`${ARMOR_BEGIN}\n`);
  let pending = Buffer.alloc(0);
  for await (const chunk of source) {
    pending = pending.length ? Buffer.concat([pending, chunk]) : Buffer.from(chunk);
    const whole = pending.length - (pending.length % LINE_BYTES);
    if (whole === 0) continue;
    const text = pending.subarray(0, whole).toString("base64");
    pending = pending.subarray(whole);
    let out = "";
    for (let i = 0; i < text.length; i += COLUMNS) out += `${text.slice(i, i + COLUMNS)}\n`;
    yield Buffer.from(out);
  }
  yield Buffer.from(`${pending.length ? `${pending.toString("base64")}\n` : ""}${ARMOR_END}\n`);
}

function bad(what: string): AirlockError {
  return new AirlockError("CRYPTO", `malformed age armor: ${what}`);
}

const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/** Decodes armored input; whitespace may surround the armor, nothing else may. */
export async function* armorDecode(source: ByteSource): AsyncGenerator<Buffer> {
  const r = new ByteReader(source);
  const line = async (): Promise<string> => {
    const l = await r.readLine(
      1024,
      () => bad("a line is too long"),
      () => bad("the end line is missing (truncated)"),
    );
    if (l === null) throw bad("the end line is missing (truncated)");
    return l.toString("latin1").replace(/\r$/, "");
  };
  let first = await line();
  while (first.trim() === "") first = await line();
  if (first.trim() !== ARMOR_BEGIN) throw bad("it does not start with the BEGIN line");
  let ended = false;
  for (;;) {
    const l = await line();
    if (l === ARMOR_END) break;
    if (ended) throw bad("a short line that is not the last one");
    if (l.length > COLUMNS || l.length === 0) throw bad("a line is not 1..64 columns");
    if (l.length < COLUMNS) ended = true;
    const b = Buffer.from(l, "base64");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(l) || l.length % 4 !== 0 || b.toString("base64") !== l) throw bad("a line is not canonical base64");
    if (l.endsWith("=")) ended = true;
    yield b;
  }
  for await (const rest of r.rest()) {
    for (const c of rest) if (!isSpace(c)) throw bad("data follows the END line");
  }
}

export function looksArmored(head: Buffer): boolean {
  return head.toString("latin1").trimStart().startsWith(ARMOR_BEGIN);
}
