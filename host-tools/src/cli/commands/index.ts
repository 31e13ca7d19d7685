import type { AirlockCommand } from "../command.ts";

/** Every sub-command, in the order `airlock --help` lists them. */
export const commands: AirlockCommand[] = [];
