// Only entry points create the root logger; modules take a child bound to their name. Key material
// and dataset contents never reach a log: the redact list below is a last line of defence, not a
// licence to log secrets.
import pino from "pino";
import type { Logger } from "pino";

export type { Logger };

const REDACT = ["key", "*.key", "secret", "*.secret", "identity", "*.identity", "plaintext", "*.plaintext", "privateKey", "*.privateKey"];

export function createRootLogger(options: { name: string; level?: string; destination?: number | string } = { name: "airlock" }): Logger {
  const level = options.level ?? process.env.AIRLOCK_LOG ?? "info";
  return pino(
    { name: options.name, level, redact: { paths: REDACT, censor: "[redacted]" }, base: undefined },
    pino.destination({ dest: options.destination ?? 2, sync: true }),
  );
}

/** A logger that drops everything: for library use and tests that do not care. */
export const silentLogger: Logger = pino({ level: "silent" });
