// A command's options read without yargs, when they are plain: each option of the command's table
// at most once, as `--name value` or `--name=value`, a boolean as a bare `--name`. That is a
// subset of what yargs accepts, read as yargs reads it (plain-options.test.ts parses the same
// command lines with both). Anything else (an unknown or repeated option, a missing value, a value
// not among the choices, a number not in decimal digits, --help, --no-NAME, a word that is not an
// option) the parser leaves to yargs, which answers it as it always has: with the same parse, or
// the same [USAGE] error. main.ts runs `airlock measure` this way, so that it does not load yargs.
import type { InferredOptionTypes } from "yargs";

/** An option as yargs declares it (a subset of yargs' Options: what this parser understands). */
export interface PlainOption {
  /** Absent: a string (yargs takes it as written when it is one of the choices). */
  type?: "string" | "number" | "boolean";
  choices?: readonly string[];
  default?: string | boolean;
  describe?: string;
}

/** The options `args` (the words after the command's name) give, with the table's defaults; undefined when they are not plain. */
export function parsePlainOptions<T extends Record<string, PlainOption>>(table: T, args: readonly string[]): InferredOptionTypes<T> | undefined {
  const argv: Record<string, string | number | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const m = /^--([^=]+)(?:=([\s\S]*))?$/.exec(args[i]!);
    if (m === null || !Object.hasOwn(table, m[1]!) || Object.hasOwn(argv, m[1]!)) return undefined;
    const [, name, inline] = m as unknown as [string, string, string | undefined];
    const option = table[name]!;
    if (option.type === "boolean") {
      // yargs also reads `--name=false`, `--name true` and `--no-name`: those are left to it.
      if (inline !== undefined) return undefined;
      argv[name] = true;
      continue;
    }
    // yargs does not take a following word that starts with "-" as the value (it reads it as an option).
    const value = inline ?? args[++i];
    if (value === undefined || (inline === undefined && value.startsWith("-"))) return undefined;
    if (option.choices !== undefined && !option.choices.includes(value)) return undefined;
    if (option.type === "number") {
      if (!/^[0-9]+$/.test(value)) return undefined;
      argv[name] = Number(value);
    } else argv[name] = value;
  }
  for (const [name, option] of Object.entries(table)) if (!Object.hasOwn(argv, name) && option.default !== undefined) argv[name] = option.default;
  return argv as InferredOptionTypes<T>;
}
