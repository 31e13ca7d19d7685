// Entry point of the `airlock` host tooling: only wiring.
import { hideBin } from "yargs/helpers";
import { runCli } from "./cli/run-cli.ts";

process.exitCode = await runCli(hideBin(process.argv));
