// Every `airlock` sub-command is named and described once in cli/commands/index.ts (the list
// `airlock --help` prints); its options (yargs builder) and handler are a CommandModule in its own
// file under cli/commands/, imported only when the command is chosen. Handlers throw AirlockError
// for user mistakes; commandExitStatus turns them into a one-paragraph message and the exit status
// ERROR_CODES declares for their code.
import type { CommandModule } from "yargs";
import { AirlockError, exitStatusOf } from "../../../proto/src/errors.ts";

// yargs' own generics are too precise to list heterogeneous commands together.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AirlockCommand = CommandModule<any, any>;

/** Exit status a handler asks for (e.g. `airlock run` returns the workload's). */
export let requestedExitCode = 0;
export function setExitCode(code: number): void {
  requestedExitCode = code;
}

/**
 * Runs a parsed command line (yargs' in run-cli.ts, or main.ts's without yargs) and returns its
 * exit status: the one the handler asked for, or its error's, with the error's message on stderr.
 */
export async function commandExitStatus(run: () => Promise<unknown>): Promise<number> {
  try {
    await run();
    return requestedExitCode;
  } catch (err) {
    const e = AirlockError.from(err);
    process.stderr.write(`${e.toUserString()}\n`);
    if (e.code === "INTERNAL" && process.env.AIRLOCK_DEBUG) process.stderr.write(`${(err as Error).stack ?? ""}\n`);
    return exitStatusOf(e.code);
  }
}

/** Prints a result for people or, with --json, for machines. */
export function printResult(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}
