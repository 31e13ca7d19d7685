// For tests: decoded messages in plain form, to compare with toEqual and to search as text.
import { bodyOf, type Incoming } from "./control.ts";

/** A decoded value in plain form: no $typeName, 64-bit fields as numbers, bytes as UTF-8 text. */
export function plain(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("utf8");
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).filter(([k]) => k !== "$typeName" && k !== "$unknown").map(([k, x]) => [k, plain(x)]));
  return v;
}

/** A link's message as { type: its case, ...its fields } in plain form. */
export const plainMessage = (message: unknown): Record<string, unknown> => {
  const body = bodyOf(message) as { case: string; value: unknown };
  return { type: body.case, ...(plain(body.value) as Record<string, unknown>) };
};

/** The messages among frames, in plain form (data frames left out). */
export const messagesOf = <M>(frames: Incoming<M>[]): Record<string, unknown>[] => frames.flatMap((m) => (m.kind === "message" ? [plainMessage(m.message)] : []));
