// Entry point of the `airlock` host tooling: only wiring. `airlock --help` (or -h) alone prints the
// text the build rendered with yargs itself (images/build-bundles.mjs, for the common widths), so
// it loads neither yargs nor the command list. `airlock measure` with plain options (the usual
// command line; cli/plain-options.ts) loads only the measure code, so that it runs at hashing
// speed. Every other command line is parsed by yargs.
import { helpWidth } from "./cli/help-width.ts";

/** `airlock --help` by width, as JSON, defined by the build; absent when run from source. */
declare const AIRLOCK_PREBUILT_HELP: string | undefined;

// `airlock ... | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

// As yargs' hideBin for node: the arguments after node and the script.
const args = process.argv.slice(2);
const prebuilt = typeof AIRLOCK_PREBUILT_HELP === "string" && args.length === 1 && (args[0] === "--help" || args[0] === "-h") ? (JSON.parse(AIRLOCK_PREBUILT_HELP) as Record<string, string | undefined>)[helpWidth()] : undefined;
if (prebuilt !== undefined) {
  process.stdout.write(`${prebuilt}\n`);
} else {
  const measured = args[0] === "measure" ? await (await import("./cli/commands/measure.ts")).measureWithPlainOptions(args.slice(1)) : undefined;
  process.exitCode = measured ?? (await (await import("./cli/run-cli.ts")).runCli(args, helpWidth()));
}
