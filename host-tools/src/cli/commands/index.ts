import type { AirlockCommand } from "../command.ts";
import { vsockFabricCommand } from "./vsock-fabric.ts";
import { measureCommand } from "./measure.ts";
import { imagesCommand } from "./images.ts";
import { runCommand } from "./run.ts";
import { downCommand, logsCommand, statusCommand, superviseCommand, upCommand } from "./pair-commands.ts";
import { verifyReportCommand } from "./verify-report.ts";
import { kbsCommand } from "./kbs.ts";
import { datasetCommand } from "./dataset.ts";
import { auditCommand } from "./audit.ts";
import { manifestCommand } from "./manifest.ts";

/** Every sub-command, in the order `airlock --help` lists them. */
export const commands: AirlockCommand[] = [measureCommand, imagesCommand, runCommand, upCommand, statusCommand, logsCommand, downCommand, superviseCommand, verifyReportCommand, kbsCommand, datasetCommand, auditCommand, manifestCommand, vsockFabricCommand];
