// The width airlock lays its help out for, shared by the yargs parser (cli/run-cli.ts) and the
// prebuilt `airlock --help` (main.ts), which must agree on it to print the same text.

/** The terminal's width, at most 110; 100 when stdout is not a terminal. */
export const helpWidth = (): number => Math.min(110, process.stdout.columns ?? 100);

/** The widths `airlock --help` is rendered for at build time (images/build-bundles.mjs): 100 for a pipe, the rest common terminals. */
export const PREBUILT_HELP_WIDTHS = [80, 100, 110] as const;
