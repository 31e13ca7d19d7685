// The width airlock lays its help out for: main.ts reads it for the prebuilt `airlock --help` and
// passes it to the yargs parser (cli/run-cli.ts runCli), so the two agree and print the same text.
// Only the entry imports this module, so the prebuilt help loads no chunk of its own.

/** The terminal's width, at most 110; 100 when stdout is not a terminal. */
export const helpWidth = (): number => Math.min(110, process.stdout.columns ?? 100);

/** The widths `airlock --help` is rendered for at build time (images/build-bundles.mjs): 100 for a pipe, the rest common terminals. */
export const PREBUILT_HELP_WIDTHS = [80, 100, 110] as const;
