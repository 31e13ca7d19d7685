// Data scopes, from least to most protected. The sandbox's scope is the strictest scope of any
// input it has read; it rises and never falls during a run (a workload cannot "forget" what it
// read). Scope names and their order are the manifest's (proto/src/manifest/schema.ts).
import { DATA_SCOPES } from "../../../proto/src/manifest/schema.ts";
import type { DataScope, OutputMode } from "../../../proto/src/manifest/schema.ts";
import { AirlockError } from "../../../proto/src/errors.ts";

export { DATA_SCOPES };
export type { DataScope };

/** PUBLIC 0 < DOMAIN_OWNED 1 < USER_PRIVATE 2 < MULTI_USER_PRIVATE 3 < SEALED 4. */
export function scopeRank(s: DataScope): number {
  const i = DATA_SCOPES.indexOf(s);
  if (i < 0) throw new AirlockError("INTERNAL", `unknown data scope ${JSON.stringify(s)}`);
  return i;
}

export function stricter(a: DataScope, b: DataScope): DataScope {
  return scopeRank(a) >= scopeRank(b) ? a : b;
}

/**
 * The strictest scope each output mode may carry:
 *
 * | mode    | may carry up to     | why                                                              |
 * | ------- | ------------------- | ---------------------------------------------------------------- |
 * | open    | DOMAIN_OWNED        | clear text reaches the host and anyone after it                  |
 * | trusted | MULTI_USER_PRIVATE  | only the collaborator named in the signed manifest can read it;  |
 * |         |                     | signing the manifest is the data owners' consent to that         |
 * | secure  | SEALED              | only rooms with the same manifest digest obtain the key          |
 *
 * So USER_PRIVATE and MULTI_USER_PRIVATE never leave in clear, and SEALED data leaves only in
 * secure mode: it never reaches a person, only another clean room.
 */
export const MODE_CEILING: Readonly<Record<OutputMode, DataScope>> = {
  open: "DOMAIN_OWNED",
  trusted: "MULTI_USER_PRIVATE",
  secure: "SEALED",
};

export function modeMayCarry(mode: OutputMode, scope: DataScope): boolean {
  return scopeRank(scope) <= scopeRank(MODE_CEILING[mode]);
}

export interface ScopeRaise {
  from: DataScope;
  to: DataScope;
  /** What was read (e.g. "input corpus"). */
  source: string;
}

/** The sandbox's current scope. There is no way to lower it: make a new tracker for a new run. */
export class ScopeTracker {
  #current: DataScope;
  readonly #raises: ScopeRaise[] = [];

  constructor(initial: DataScope = "PUBLIC") {
    scopeRank(initial);
    this.#current = initial;
  }

  get current(): DataScope {
    return this.#current;
  }

  /** Every rise, in order (for the audit trail and the run's summary). */
  get raises(): readonly ScopeRaise[] {
    return this.#raises;
  }

  /** Records that data of `scope` was read; returns the rise, or null if the scope did not change. */
  observe(scope: DataScope, source: string): ScopeRaise | null {
    if (scopeRank(scope) <= scopeRank(this.#current)) return null;
    const raise = { from: this.#current, to: scope, source };
    this.#current = scope;
    this.#raises.push(raise);
    return raise;
  }
}
