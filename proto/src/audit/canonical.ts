// Canonical JSON (the RFC 8785 subset that plain JSON data needs): object keys sorted by UTF-16
// code units, no whitespace, ECMAScript number and string serialisation. The same value always
// gives the same bytes, so a hash over it is stable across writers and readers.
import { AirlockError } from "../errors.ts";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function canonicalJson(value: unknown, path = "$"): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new AirlockError("INTERNAL", `${path}: ${value} has no JSON form`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v, i) => canonicalJson(v, `${path}[${i}]`)).join(",")}]`;
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v, `${path}.${k}`)}`).join(",")}}`;
  }
  throw new AirlockError("INTERNAL", `${path}: a ${typeof value === "object" ? (value.constructor?.name ?? "object") : typeof value} is not plain JSON data`);
}
