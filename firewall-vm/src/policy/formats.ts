// Checks an open-mode output must pass before it is released in clear: the declared format parses
// (text, JSON, CSV with a header) and, if the manifest gives one, the content fits a schema.
//
// Schema: a small subset of JSON Schema, chosen so that every keyword is easy to check and none
// can be made slow by hostile content (no `pattern`, no `$ref`):
//   type                 "object" | "array" | "string" | "number" | "integer" | "boolean" | "null"
//   properties           { name: schema }  (objects)
//   required             [names]           (objects)
//   additionalProperties boolean, DEFAULT FALSE (unlike JSON Schema: an open output must not carry
//                        fields nobody reviewed)
//   items, minItems, maxItems              (arrays)
//   minLength, maxLength                   (strings, in code points)
//   minimum, maximum                       (numbers)
//   enum                 [scalars]         (any type)
// For CSV the schema describes one row: type "object" whose properties are the columns (the
// header must list exactly those, in any order); a cell is checked as a string, or parsed as a
// number/integer/boolean when its property has that type; the row schema's maxItems bounds the
// number of data rows.
import { AirlockError } from "../../../proto/src/errors.ts";
import type { OutputFormat } from "../../../proto/src/manifest/schema.ts";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

export interface Schema {
  type?: "object" | "array" | "string" | "number" | "integer" | "boolean" | "null";
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  enum?: Array<string | number | boolean | null>;
}

const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];
const KEYWORDS = ["type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "enum"];

/**
 * Validates a schema written in a manifest; `at` is the field path for the message (the manifest
 * loader adds the file name). Returns the schema typed.
 */
export function parseSchema(value: unknown, at = "schema"): Schema {
  const fail = (path: string, expected: string): never => {
    throw new AirlockError("MANIFEST_INVALID", `${path}: expected ${expected}`);
  };
  const check = (v: unknown, path: string): Schema => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return fail(path, "a schema object");
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!KEYWORDS.includes(k)) fail(`${path}.${k}`, `one of the schema keywords ${KEYWORDS.join(", ")}`);
    if (o.type !== undefined && !TYPES.includes(o.type as string)) fail(`${path}.type`, TYPES.join(" | "));
    for (const k of ["minItems", "maxItems", "minLength", "maxLength"]) {
      if (o[k] !== undefined && !(Number.isSafeInteger(o[k]) && (o[k] as number) >= 0)) fail(`${path}.${k}`, "a non-negative integer");
    }
    for (const k of ["minimum", "maximum"]) if (o[k] !== undefined && !Number.isFinite(o[k])) fail(`${path}.${k}`, "a number");
    if (o.additionalProperties !== undefined && typeof o.additionalProperties !== "boolean") fail(`${path}.additionalProperties`, "true or false");
    if (o.required !== undefined && !(Array.isArray(o.required) && o.required.every((x) => typeof x === "string"))) fail(`${path}.required`, "a list of names");
    if (o.enum !== undefined && !(Array.isArray(o.enum) && o.enum.every((x) => x === null || ["string", "number", "boolean"].includes(typeof x)))) {
      fail(`${path}.enum`, "a list of strings, numbers, booleans or null");
    }
    const out = { ...o } as Schema;
    if (o.properties !== undefined) {
      if (typeof o.properties !== "object" || o.properties === null || Array.isArray(o.properties)) fail(`${path}.properties`, "an object of schemas");
      out.properties = Object.fromEntries(Object.entries(o.properties as object).map(([k, s]) => [k, check(s, `${path}.properties.${k}`)]));
    }
    if (o.items !== undefined) out.items = check(o.items, `${path}.items`);
    return out;
  };
  return check(value, at);
}

/** The first violation, as "path: what is wrong", or null when the value fits. */
export function checkSchema(value: JsonValue, schema: Schema, path = "$"): string | null {
  if (schema.enum && !schema.enum.some((e) => e === value)) return `${path}: not one of the allowed values`;
  const t = schema.type;
  const actual = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  if (t) {
    const ok = t === "integer" ? typeof value === "number" && Number.isInteger(value) : t === actual;
    if (!ok) return `${path}: expected ${t}, found ${actual}`;
  }
  if (typeof value === "string") {
    const len = [...value].length;
    if (schema.minLength !== undefined && len < schema.minLength) return `${path}: shorter than ${schema.minLength}`;
    if (schema.maxLength !== undefined && len > schema.maxLength) return `${path}: longer than ${schema.maxLength}`;
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) return `${path}: below ${schema.minimum}`;
    if (schema.maximum !== undefined && value > schema.maximum) return `${path}: above ${schema.maximum}`;
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) return `${path}: fewer than ${schema.minItems} items`;
    if (schema.maxItems !== undefined && value.length > schema.maxItems) return `${path}: more than ${schema.maxItems} items`;
    if (schema.items) {
      for (let i = 0; i < value.length; i++) {
        const e = checkSchema(value[i]!, schema.items, `${path}[${i}]`);
        if (e) return e;
      }
    }
  }
  if (actual === "object") {
    const obj = value as Record<string, JsonValue>;
    for (const r of schema.required ?? []) if (!Object.hasOwn(obj, r)) return `${path}: missing required field ${JSON.stringify(r)}`;
    for (const [k, v] of Object.entries(obj)) {
      const sub = schema.properties && Object.hasOwn(schema.properties, k) ? schema.properties[k] : undefined;
      if (sub) {
        const e = checkSchema(v, sub, `${path}.${k}`); // k is a schema key here, not the workload's
        if (e) return e;
      } else if (schema.additionalProperties !== true) {
        return `${path}: field ${JSON.stringify(k)} is not in the schema`;
      }
    }
  }
  return null;
}

/** Strict UTF-8, or null. */
export function utf8(content: Buffer): string | null {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(content);
  } catch {
    return null;
  }
}

/** RFC 4180 CSV (LF or CRLF line ends, optional final newline). Returns rows or an error. */
export function parseCsv(text: string): { rows: string[][] } | { error: string } {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let i = 0;
  let line = 1;
  let quoted = false;
  let fieldStarted = false;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        const n = text[i];
        if (n !== undefined && n !== "," && n !== "\n" && n !== "\r") return { error: `line ${line}: text after a closing quote` };
        continue;
      }
      if (c === "\n") line++;
      field += c;
      i++;
      continue;
    }
    if (c === '"') {
      if (field !== "") return { error: `line ${line}: a quote inside an unquoted field` };
      quoted = true;
      fieldStarted = true;
      i++;
    } else if (c === ",") {
      row.push(field);
      field = "";
      fieldStarted = true;
      i++;
    } else if (c === "\r" || c === "\n") {
      if (c === "\r" && text[i + 1] !== "\n") return { error: `line ${line}: a bare carriage return` };
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      fieldStarted = false;
      i += c === "\r" ? 2 : 1;
      line++;
    } else {
      field += c;
      fieldStarted = true;
      i++;
    }
  }
  if (quoted) return { error: `line ${line}: a quoted field is not closed` };
  if (fieldStarted || field !== "") {
    row.push(field);
    rows.push(row);
  }
  return { rows };
}

function csvCell(cell: string, schema: Schema | undefined): JsonValue | undefined {
  switch (schema?.type) {
    case "number":
    case "integer":
      return /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(cell) ? Number(cell) : undefined;
    case "boolean":
      return cell === "true" ? true : cell === "false" ? false : undefined;
    default:
      return cell;
  }
}

/** Whether content is well-formed in the declared format (and fits the schema): null, or why not. */
export function checkFormat(content: Buffer, format: OutputFormat, schema?: Schema): string | null {
  if (format === "bytes") return null;
  const text = utf8(content);
  if (text === null) return "is not valid UTF-8";
  if (format === "text") {
    // eslint-disable-next-line no-control-regex
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? "contains control characters (not plain text)" : null;
  }
  if (format === "json") {
    let value: JsonValue;
    try {
      value = JSON.parse(text) as JsonValue;
    } catch (err) {
      return `is not JSON (${(err as Error).message})`;
    }
    return schema ? checkSchema(value, schema) : null;
  }
  const parsed = parseCsv(text);
  if ("error" in parsed) return `is not CSV: ${parsed.error}`;
  const [header, ...rows] = parsed.rows;
  if (!header) return "is not CSV with a header: it is empty";
  if (header.some((h) => h.trim() === "")) return "has a CSV header with an empty column name";
  if (new Set(header).size !== header.length) return "has a CSV header with a repeated column name";
  for (let r = 0; r < rows.length; r++) {
    if (rows[r]!.length !== header.length) return `CSV row ${r + 2} has ${rows[r]!.length} fields, the header has ${header.length}`;
  }
  if (!schema) return null;
  const props = schema.properties ?? {};
  const cols = Object.keys(props);
  const missing = cols.filter((c) => !header.includes(c));
  const extra = header.filter((h) => !Object.hasOwn(props, h));
  const names = (xs: string[]): string => xs.map((x) => JSON.stringify(x.slice(0, 100))).join(", ");
  if (missing.length || extra.length) {
    return `CSV header does not match the schema${missing.length ? `; missing ${names(missing)}` : ""}${extra.length ? `; not in the schema: ${names(extra)}` : ""}`;
  }
  const rowSchema: Schema = { ...schema, type: "object", required: cols };
  if (schema.maxItems !== undefined && rows.length > schema.maxItems) return `has ${rows.length} CSV rows, more than ${schema.maxItems}`;
  for (let r = 0; r < rows.length; r++) {
    const obj: Record<string, JsonValue> = {};
    for (let c = 0; c < header.length; c++) {
      const v = csvCell(rows[r]![c]!, props[header[c]!]);
      if (v === undefined) return `CSV row ${r + 2}, column ${JSON.stringify(header[c])}: expected ${props[header[c]!]!.type}`;
      obj[header[c]!] = v;
    }
    const e = checkSchema(obj, { ...rowSchema, maxItems: undefined }, `row ${r + 2}`);
    if (e) return e;
  }
  return null;
}
