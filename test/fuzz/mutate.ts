// Mutation engine for `npm run fuzz`: a seedable generator, per-case seeds (every case can be
// replayed on its own from --seed and its index), and havoc-style stacked mutations of valid seed
// inputs: bit flips, byte sets, interesting integers, length-field edits, truncation, extension,
// splices with other seeds, random bytes, deletions, duplications and dictionary tokens (some
// repeated thousands of times, for nesting depth).

/** xorshift-multiply generator of 32-bit values (mulberry32). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** [0, 1) */
  float(): number {
    return this.u32() / 2 ** 32;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  chance(p: number): boolean {
    return this.float() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** Always the gentlest choice (chance() false, int(n) = n - 1): how seeds are checked. */
export class CalmRng extends Rng {
  override u32(): number {
    return 0xffffff00;
  }
}

function mix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a of a name: a target's part of its cases' seeds. */
export function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The seed of one case: a function of the run's seed, the target and the case index alone. */
export function caseSeed(seed: number, target: string, index: number): number {
  return mix(mix(mix(seed >>> 0) ^ nameHash(target)) ^ Math.imul(index + 1, 0x9e3779b1) ^ Math.floor(index / 2 ** 32));
}

/** A length, count or offset field of a seed that length-field edits aim at. */
export interface Field {
  off: number;
  size: 1 | 2 | 4 | 8;
  le: boolean;
}

export interface Seed {
  name: string;
  data: Buffer;
  fields?: Field[];
}

export interface MutateOptions {
  /** Inputs are cut to this many bytes. */
  maxLen: number;
  /** Tokens of the format (keywords, delimiters, edge values) to insert or overwrite with. */
  dict: readonly Buffer[];
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x0a, 0x2d, 0x30];
const INTERESTING_32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 44, 45, 64, 4096, 65536, 65537, 1184];

function writeInt(b: Buffer, off: number, size: 1 | 2 | 4 | 8, le: boolean, v: number): void {
  if (off < 0 || off + size > b.length) return;
  if (size === 1) b[off] = v & 0xff;
  else if (size === 2) {
    if (le) b.writeUInt16LE(v & 0xffff, off);
    else b.writeUInt16BE(v & 0xffff, off);
  } else if (size === 4) {
    if (le) b.writeUInt32LE(v >>> 0, off);
    else b.writeUInt32BE(v >>> 0, off);
  } else {
    const hi = v < 0 ? 0xffffffff : Math.floor(v / 2 ** 32) >>> 0;
    if (le) {
      b.writeUInt32LE(v >>> 0, off);
      b.writeUInt32LE(hi, off + 4);
    } else {
      b.writeUInt32BE(hi, off);
      b.writeUInt32BE(v >>> 0, off + 4);
    }
  }
}

function readInt(b: Buffer, off: number, size: 1 | 2 | 4 | 8, le: boolean): number {
  if (off < 0 || off + size > b.length) return 0;
  if (size === 1) return b[off]!;
  if (size === 2) return le ? b.readUInt16LE(off) : b.readUInt16BE(off);
  if (size === 4) return le ? b.readUInt32LE(off) : b.readUInt32BE(off);
  return le ? b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 2 ** 32 : b.readUInt32BE(off + 4) + b.readUInt32BE(off) * 2 ** 32;
}

type Mutator = (rng: Rng, b: Buffer, seed: Seed, corpus: readonly Seed[], opt: MutateOptions) => Buffer;

const pos = (rng: Rng, b: Buffer): number => rng.int(b.length + 1);

const MUTATORS: { weight: number; name: string; fn: Mutator }[] = [
  {
    name: "bit-flip",
    weight: 6,
    fn: (rng, b) => {
      if (b.length === 0) return b;
      for (let k = 1 + rng.int(rng.chance(0.8) ? 2 : 8); k > 0; k--) b[rng.int(b.length)] ^= 1 << rng.int(8);
      return b;
    },
  },
  {
    name: "byte-set",
    weight: 5,
    fn: (rng, b) => {
      if (b.length === 0) return b;
      for (let k = 1 + rng.int(4); k > 0; k--) b[rng.int(b.length)] = rng.chance(0.5) ? rng.pick(INTERESTING_8) : rng.u32() & 0xff;
      return b;
    },
  },
  {
    name: "arith",
    weight: 3,
    fn: (rng, b) => {
      const size = rng.pick([1, 2, 4] as const);
      const off = rng.int(Math.max(1, b.length - size + 1));
      const le = rng.chance(0.5);
      writeInt(b, off, size, le, readInt(b, off, size, le) + (rng.chance(0.5) ? 1 : -1) * (1 + rng.int(35)));
      return b;
    },
  },
  {
    name: "interesting-int",
    weight: 4,
    fn: (rng, b) => {
      const size = rng.pick([1, 2, 4, 8] as const);
      writeInt(b, rng.int(Math.max(1, b.length - size + 1)), size, rng.chance(0.5), rng.chance(0.2) ? b.length + rng.int(9) - 4 : rng.pick(INTERESTING_32));
      return b;
    },
  },
  {
    name: "length-field",
    weight: 6,
    fn: (rng, b, seed) => {
      const fields = seed.fields ?? [];
      if (fields.length === 0) return b;
      const f = rng.pick(fields);
      const cur = readInt(b, f.off, f.size, f.le);
      const max = f.size === 8 ? 2 ** 64 - 1 : 2 ** (8 * f.size) - 1;
      const v = rng.pick([0, 1, cur - 1, cur + 1, cur + 1 + rng.int(64), cur * 2, Math.floor(cur / 2), max, max - 1, 2 ** (8 * f.size - 1), b.length, b.length - f.off, rng.u32()]);
      writeInt(b, f.off, f.size, f.le, Math.max(0, Math.min(v, max)));
      return b;
    },
  },
  {
    name: "truncate",
    weight: 4,
    fn: (rng, b) => (rng.chance(0.7) ? b.subarray(0, rng.int(b.length + 1)) : b.subarray(0, Math.max(0, b.length - 1 - rng.int(16)))),
  },
  {
    name: "extend",
    weight: 3,
    fn: (rng, b) => {
      const tail = rng.chance(0.5) ? rng.bytes(1 + rng.int(rng.chance(0.9) ? 64 : 4096)) : b.subarray(rng.int(b.length + 1));
      return Buffer.concat([b, tail]);
    },
  },
  {
    name: "splice",
    weight: 4,
    fn: (rng, b, _seed, corpus) => {
      const other = rng.pick(corpus).data;
      if (rng.chance(0.5)) return Buffer.concat([b.subarray(0, pos(rng, b)), other.subarray(rng.int(other.length + 1))]);
      const i = rng.int(other.length + 1);
      const piece = other.subarray(i, i + 1 + rng.int(256));
      const at = pos(rng, b);
      return Buffer.concat([b.subarray(0, at), piece, b.subarray(rng.chance(0.5) ? at : Math.min(b.length, at + piece.length))]);
    },
  },
  {
    name: "random-bytes",
    weight: 3,
    fn: (rng, b) => {
      if (b.length === 0) return rng.bytes(rng.int(64));
      const at = rng.int(b.length);
      const n = Math.min(b.length - at, 1 + rng.int(32));
      rng.bytes(n).copy(b, at);
      return b;
    },
  },
  {
    name: "delete",
    weight: 3,
    fn: (rng, b) => {
      const at = pos(rng, b);
      return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(rng.chance(0.8) ? 8 : 256)))]);
    },
  },
  {
    name: "duplicate",
    weight: 2,
    fn: (rng, b) => {
      const from = rng.int(b.length + 1);
      const piece = b.subarray(from, from + 1 + rng.int(64));
      const times = rng.chance(0.9) ? 1 + rng.int(3) : 1 + rng.int(200);
      const at = pos(rng, b);
      return Buffer.concat([b.subarray(0, at), ...Array.from({ length: times }, () => piece), b.subarray(at)]);
    },
  },
  {
    name: "dictionary",
    weight: 5,
    fn: (rng, b, _seed, _corpus, opt) => {
      if (opt.dict.length === 0) return b;
      const token = rng.pick(opt.dict);
      // Mostly once; sometimes many times over (deep nesting, long runs).
      const times = rng.chance(0.95) ? 1 : rng.pick([2, 16, 256, 2000, 20000]);
      const ins = times === 1 ? token : Buffer.concat(Array.from({ length: times }, () => token));
      const at = pos(rng, b);
      return Buffer.concat([b.subarray(0, at), ins, b.subarray(rng.chance(0.6) ? at : Math.min(b.length, at + ins.length))]);
    },
  },
  {
    name: "random-input",
    weight: 1,
    fn: (rng) => rng.bytes(rng.int(rng.chance(0.8) ? 64 : 2048)),
  },
];

const TOTAL_WEIGHT = MUTATORS.reduce((s, m) => s + m.weight, 0);

function pickMutator(rng: Rng): Mutator {
  let w = rng.int(TOTAL_WEIGHT);
  for (const m of MUTATORS) {
    if (w < m.weight) return m.fn;
    w -= m.weight;
  }
  return MUTATORS[0]!.fn;
}

/** A mutated copy of a seed: 1 to 8 stacked mutations, mostly few. */
export function mutate(rng: Rng, corpus: readonly Seed[], opt: MutateOptions): Buffer {
  const seed = rng.pick(corpus);
  let b: Buffer = Buffer.from(seed.data);
  let n = 1;
  while (n < 8 && rng.chance(0.5)) n++;
  for (let i = 0; i < n; i++) {
    b = pickMutator(rng)(rng, b, seed, corpus, opt);
    if (b.length > opt.maxLen) b = b.subarray(0, opt.maxLen);
  }
  // Mutators return views; the decoder gets a buffer of its own.
  return Buffer.from(b);
}

/** Text tokens as a dictionary. */
export function dictionary(...tokens: string[]): Buffer[] {
  return tokens.map((t) => Buffer.from(t, "latin1"));
}

/** A classic hex dump (offset, 16 bytes, ASCII); long inputs show head and tail. */
export function hexDump(b: Buffer, max = 4096): string {
  const lines: string[] = [];
  const line = (off: number): string => {
    const row = b.subarray(off, off + 16);
    const hex = [...row].map((x) => x.toString(16).padStart(2, "0")).join(" ").padEnd(47);
    const ascii = [...row].map((x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : ".")).join("");
    return `${off.toString(16).padStart(8, "0")}  ${hex}  |${ascii}|`;
  };
  if (b.length <= max) {
    for (let off = 0; off < b.length; off += 16) lines.push(line(off));
  } else {
    const half = Math.floor(max / 32) * 16;
    for (let off = 0; off < half; off += 16) lines.push(line(off));
    lines.push(`... ${b.length - 2 * half} bytes not shown ...`);
    for (let off = Math.floor((b.length - half) / 16) * 16; off < b.length; off += 16) lines.push(line(off));
  }
  lines.push(`(${b.length} bytes)`);
  return lines.join("\n");
}

// ---- structure-aware mutation of JSON values (JSON and YAML targets) ----

const EDGE_VALUES: unknown[] = [
  null, true, false, 0, -1, 1, 255, 256, 65535, 65536, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 40, 2 ** 44 + 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 0.5, -0.5, 1e308, -1e-308,
  "", " ", "a", "0", "-1", "1e3", "..", "../x", "/", "/etc/passwd", "a/../../b", "a//b", "\u0000", "\n", "é", "\ud800", "A".repeat(5000), "null", "__proto__", "constructor",
  [], [null], [[]], {}, { __proto__: null }, { a: 1 },
];
/** Text that JSON.stringify cannot produce but a hostile peer can send. */
const RAW_TOKENS = ["1e999", "-1e999", "-0", "1E400", "0.0000000000000000000000000000001e-400", "123456789012345678901234567890", "1.0", "1e2", "\"\\u0000\"", "\"\\ud800\"", "\"\\uDFFF\\uD800\""];
/** Marks where raw text goes; plain letters, so JSON and YAML emit it as it is (quoted or not). */
const SENTINEL = "FUZZRAW";

interface Slot {
  parent: Record<string, unknown> | unknown[];
  key: string | number;
}

function slots(v: unknown, out: Slot[] = [], depth = 0): Slot[] {
  if (depth > 64 || v === null || typeof v !== "object") return out;
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i });
      slots(x, out, depth + 1);
    });
  } else {
    for (const [k, x] of Object.entries(v)) {
      out.push({ parent: v as Record<string, unknown>, key: k });
      slots(x, out, depth + 1);
    }
  }
  return out;
}

function get(s: Slot): unknown {
  return (s.parent as Record<string | number, unknown>)[s.key];
}

function set(s: Slot, v: unknown): void {
  (s.parent as Record<string | number, unknown>)[s.key] = v;
}

/**
 * Mutates a JSON value in place (1 to 4 edits) and returns its text. `raw` edits put text JSON
 * cannot express (1e999, -0, deep nesting) where a value was.
 */
export function mutateJsonText(rng: Rng, value: unknown, stringify: (v: unknown) => string = (v) => JSON.stringify(v), edges: readonly unknown[] = []): string {
  const raws: string[] = [];
  let root = value;
  const edits = 1 + (rng.chance(0.3) ? rng.int(4) : 0);
  for (let e = 0; e < edits; e++) {
    const all = slots(root);
    if (all.length === 0) {
      root = rng.pick(EDGE_VALUES);
      continue;
    }
    const s = rng.pick(all);
    const cur = get(s);
    const op = rng.int(10);
    if (op === 0) {
      // Delete the slot.
      if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
      else delete (s.parent as Record<string, unknown>)[s.key as string];
    } else if (op === 1 && !Array.isArray(s.parent)) {
      // Add a field: a known name from elsewhere in the value, or a hostile one.
      const names = all.filter((x) => typeof x.key === "string").map((x) => x.key as string);
      (s.parent as Record<string, unknown>)[rng.chance(0.7) ? rng.pick(names) : rng.pick(["__proto__", "constructor", "x", "", "sig"])] = structuredClone(rng.pick(EDGE_VALUES));
    } else if (op === 2 && Array.isArray(s.parent)) {
      // Repeat an element.
      const n = rng.chance(0.8) ? 1 + rng.int(4) : 1 + rng.int(5000);
      s.parent.splice(s.key as number, 0, ...Array.from({ length: n }, () => structuredClone(cur)));
    } else if (op === 3 && typeof cur === "string") {
      set(s, rng.pick([cur.slice(0, rng.int(cur.length + 1)), cur + rng.pick(["x", "/..", "\u0000", "é", "=", "A".repeat(100)]), cur.toUpperCase(), `${cur}${cur}`, ""]));
    } else if (op === 4 && typeof cur === "number") {
      set(s, rng.pick([cur + 1, cur - 1, -cur, cur * 2 ** rng.int(40), cur + 0.5, 2 ** 53 - cur, Number.MAX_SAFE_INTEGER, cur * 1e300]));
    } else if (op === 5) {
      // Flip the type: "5" <-> 5, x -> [x], x -> {x}.
      set(s, typeof cur === "number" ? String(cur) : typeof cur === "string" && /^-?\d+$/.test(cur) ? Number(cur) : rng.chance(0.5) ? [cur] : { v: cur });
    } else if (op === 6) {
      raws.push(rng.chance(0.8) ? rng.pick(RAW_TOKENS) : "[".repeat(1000 + rng.int(20000)));
      set(s, `${SENTINEL}${raws.length - 1}${SENTINEL}`);
    } else if (op === 7 && cur !== null && typeof cur === "object") {
      // Swap with a value from elsewhere.
      set(s, structuredClone(get(rng.pick(all))));
    } else {
      set(s, structuredClone(edges.length > 0 && rng.chance(0.5) ? rng.pick(edges) : rng.pick(EDGE_VALUES)));
    }
  }
  let text = stringify(root);
  if (raws.length > 0) {
    text = text.replace(new RegExp(`(["']?)${SENTINEL}(\\d+)${SENTINEL}\\1`, "g"), (_m, _q: string, i: string) => {
      const r = raws[Number(i)]!;
      // Deep nesting: open brackets, then as many closing ones.
      return r.startsWith("[[") ? `${r}${"]".repeat(r.length)}` : r;
    });
  }
  return text;
}
