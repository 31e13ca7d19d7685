import yargs, { type Argv } from "yargs";
import { AirlockError, ERROR_CODES, RUN_EXIT, RUN_EXIT_SUMMARY, type ErrorCode } from "../../../proto/src/errors.ts";
import { commands } from "./commands/index.ts";
import { commandExitStatus } from "./command.ts";

/** Words of `text` in lines of at most `width` characters, the first after `first`, the rest indented as far. */
function hanging(first: string, text: string, width: number): string {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(" ")) {
    if (line.length > first.length && line.length + 1 + word.length > width) {
      lines.push(line);
      line = " ".repeat(first.length) + word;
    } else line += (line.length > first.length ? " " : "") + word;
  }
  return [...lines, line].join("\n");
}

/**
 * What `airlock --help` ends with: the exit statuses, each error code's from ERROR_CODES (where
 * they are declared, with their summaries) and `airlock run`'s own from RUN_EXIT.
 */
export function exitStatusHelp(width = 100): string {
  const codes = Object.keys(ERROR_CODES) as ErrorCode[];
  const pad = Math.max(...codes.map((c) => c.length));
  return [
    hanging("", "Exit status: 0 on success, else the error code's (listed below): 1 a failed check, 2 bad input or a refusal, 3 an internal fault (AIRLOCK_DEBUG=1 prints its stack).", width),
    hanging("", "`airlock run` exits 0 when the run completed and the workload succeeded, with the workload's own status when it failed at DOMAIN_OWNED or below, and otherwise:", width),
    ...(Object.keys(RUN_EXIT) as (keyof typeof RUN_EXIT)[]).map((k) => hanging(`  ${RUN_EXIT[k]}  `, RUN_EXIT_SUMMARY[k], width)),
    "",
    "Errors end with [CODE], stable for scripts:",
    ...codes.map((c) => hanging(`  ${c.padEnd(pad)}  ${ERROR_CODES[c].exit}  `, ERROR_CODES[c].summary, width)),
  ].join("\n");
}

/** airlock's parser for one command line, laying its help out at `width` columns. */
function cliParser(argv: string[], width: number): Argv {
  return yargs(argv)
    .scriptName("airlock")
    .locale("en")
    .usage("$0 <command> [options]\n\nA confidential clean room built from two VMs.")
    .command(commands)
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .recommendCommands()
    .help()
    .alias("h", "help")
    .version(false)
    .epilogue(exitStatusHelp(width))
    .wrap(width)
    .fail((msg, err) => {
      throw err ?? new AirlockError("USAGE", msg, { hint: "see `airlock --help`" });
    });
}

/**
 * What `airlock --help` prints (less console.log's final newline), as yargs lays it out at `width`.
 * The build renders it for PREBUILT_HELP_WIDTHS into the bundle, so that main.ts prints it without
 * loading yargs; run-cli.test.ts checks it is what the parser itself prints.
 */
export async function topLevelHelp(width: number): Promise<string> {
  return cliParser([], width).getHelp();
}

/**
 * Runs one command line, its help laid out at `width` (cli/help-width.ts, which main.ts reads: the
 * entry alone imports it, so `airlock --help` loads no chunk); returns the exit status (a
 * handler's, or its error code's from ERROR_CODES).
 */
export async function runCli(argv: string[], width: number): Promise<number> {
  const parser = cliParser(argv, width);
  return commandExitStatus(() => parser.parseAsync());
}
