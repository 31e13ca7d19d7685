// Policy of the firewall: data scopes (what the sandbox has read), output modes and the rules an
// output must meet to leave. Pure functions; the enforcer gathers the facts and acts.
export { DATA_SCOPES, MODE_CEILING, ScopeTracker, modeMayCarry, scopeRank, stricter } from "./scopes.ts";
export type { DataScope, ScopeRaise } from "./scopes.ts";
export { checkFormat, checkSchema, parseCsv, parseSchema } from "./formats.ts";
export type { JsonValue, Schema } from "./formats.ts";
export { decideOutput, inspectOpenOutput, isSafeOpenName } from "./decide.ts";
export type { OutputDecision, OutputRequest } from "./decide.ts";
