// `airlock version` and the hidden `airlock remote-side` (what `--host` asks of the remote airlock).
import type { Argv } from "yargs";
import { printResult, type AirlockCommand } from "../command.ts";
import { versionIdentity } from "../../remote/version.ts";
import { listOut, remoteInfo, stageFromStdin } from "../../remote/remote-side.ts";

export const versionCommand: AirlockCommand = {
  builder: (y: Argv) => y.option("json", { type: "boolean", default: false }),
  handler: (argv) => {
    const v = versionIdentity();
    printResult((argv as unknown as { json: boolean }).json, v, () => `airlock ${v.version} (build ${v.build.slice(0, 12)})`);
  },
};

export const remoteSideCommand: AirlockCommand = {
  builder: (y: Argv) => y.positional("op", { choices: ["info", "stage", "list-out"] as const, demandOption: true }).positional("dir", { type: "string" }),
  handler: async (argv) => {
    const { op, dir } = argv as unknown as { op: "info" | "stage" | "list-out"; dir?: string };
    if (op === "info") return printResult(true, remoteInfo(), () => "");
    if (op === "list-out") return printResult(true, listOut(dir ?? "."), () => "");
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    printResult(true, stageFromStdin(Buffer.concat(chunks).toString("utf8")), () => "");
  },
};
