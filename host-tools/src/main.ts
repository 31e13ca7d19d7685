// Entry point of the `airlock` host tooling: only wiring.
import { hideBin } from "yargs/helpers";
import { runCli } from "./cli/run-cli.ts";

// `airlock ... | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

process.exitCode = await runCli(hideBin(process.argv));
