import yargs from "yargs";
import { AirlockError } from "../../../proto/src/errors.ts";
import { commands } from "./commands/index.ts";
import { requestedExitCode } from "./command.ts";

/** Exit statuses: 0 ok, 1 a check failed or the workload failed (run returns the workload's), 2 usage or input error, 3 internal fault. */
export async function runCli(argv: string[]): Promise<number> {
  const parser = yargs(argv)
    .scriptName("airlock")
    .usage("$0 <command> [options]\n\nA confidential clean room built from two VMs.")
    .command(commands)
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .recommendCommands()
    .help()
    .alias("h", "help")
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((msg, err) => {
      throw err ?? new AirlockError("USAGE", msg, { hint: "see `airlock --help`" });
    });
  try {
    await parser.parseAsync();
    return requestedExitCode;
  } catch (err) {
    const e = AirlockError.from(err);
    process.stderr.write(`${e.toUserString()}\n`);
    if (e.code === "INTERNAL") {
      if (process.env.AIRLOCK_DEBUG) process.stderr.write(`${(err as Error).stack ?? ""}\n`);
      return 3;
    }
    return e.code === "REPORT_REJECTED" || e.code === "AUDIT_INVALID" ? 1 : 2;
  }
}
