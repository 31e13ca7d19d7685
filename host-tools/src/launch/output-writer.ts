// Where a run's released outputs land on the host (--out). The host names every file itself: a
// sealed output is `<out>/<output>.tar.age` (its name from the manifest), an open output's files
// go under `<out>/<output>/` only if each path is in the safe set. Files arrive into a staging
// folder and are put in place only when the firewall says the run released them all; a run that
// fails leaves nothing but its audit trail and summary. A file that cannot be written (a name
// collision, a bad name) is refused on its own and counted: it never fails the pair, and no error,
// log line or state carries a name the workload chose.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import { AirlockError } from "../../../proto/src/errors.ts";
import { isSafeOpenName } from "../../../proto/src/archive.ts";

export const STAGING = ".airlock-incoming";
/** What the run itself writes in --out, beside the outputs. */
export const RUN_FILES = ["audit.log", "summary.json"];

export interface WriterReport {
  written: { output: string; file: string; bytes: number }[];
  /** Files refused by the host writer (collisions, names), counted per output. */
  refused: Record<string, number>;
}

export class OutputWriter {
  private readonly staging: string;
  private sealed: { output: string; fd: number; bytes: number; file: string } | undefined;
  private open: { fd: number; size: number; got: number; output: string; file: string } | undefined;
  private readonly report: WriterReport = { written: [], refused: {} };
  private readonly placed = new Set<string>();

  constructor(
    private readonly out: string,
    private readonly outputNames: Set<string>,
  ) {
    this.staging = path.join(out, STAGING);
  }

  get result(): WriterReport {
    return this.report;
  }

  private checkOutput(output: string): void {
    if (!this.outputNames.has(output)) throw new AirlockError("GUEST_PROTOCOL", "the firewall sent an output the manifest does not declare");
  }

  private stage(rel: string): string {
    const target = path.join(this.staging, rel);
    mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
    return target;
  }

  sealedBegin(output: string): void {
    this.checkOutput(output);
    if (this.sealed || this.open) throw new AirlockError("GUEST_PROTOCOL", "the firewall began a sealed output inside another file");
    const file = `${output}.tar.age`;
    if (this.placed.has(file)) throw new AirlockError("GUEST_PROTOCOL", "the firewall sent an output twice");
    this.placed.add(file);
    this.sealed = { output, fd: openSync(this.stage(file), "wx", 0o600), bytes: 0, file };
  }

  sealedData(output: string, data: Buffer): void {
    if (!this.sealed || this.sealed.output !== output) throw new AirlockError("GUEST_PROTOCOL", "sealed data outside its output");
    for (let off = 0; off < data.length; ) off += writeSync(this.sealed.fd, data, off);
    this.sealed.bytes += data.length;
  }

  sealedEnd(output: string, bytes: number): void {
    const s = this.sealed;
    if (!s || s.output !== output || s.bytes !== bytes) throw new AirlockError("GUEST_PROTOCOL", "a sealed output ended with another size than was sent");
    fsyncSync(s.fd);
    closeSync(s.fd);
    this.sealed = undefined;
    this.report.written.push({ output, file: s.file, bytes });
  }

  /** Starts an open file; returns false when it is refused (then its data is dropped). */
  openBegin(output: string, rel: string, size: number): boolean {
    this.checkOutput(output);
    if (this.sealed || this.open) throw new AirlockError("GUEST_PROTOCOL", "the firewall began a file inside another");
    const file = `${output}/${rel}`;
    const parents = file.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"));
    // A name that is not safe, taken, or a file where a folder is needed (or the reverse): refused.
    if (!isSafeOpenName(rel) || this.placed.has(file) || this.folders.has(file) || parents.some((p) => this.placed.has(p))) {
      this.report.refused[output] = (this.report.refused[output] ?? 0) + 1;
      this.open = size === 0 ? undefined : { fd: -1, size, got: 0, output, file: "" };
      return false;
    }
    this.placed.add(file);
    for (const p of parents) this.folders.add(p);
    this.open = { fd: openSync(this.stage(file), "wx", 0o600), size, got: 0, output, file };
    if (size === 0) this.openFinish();
    return true;
  }

  private readonly folders = new Set<string>();

  openData(data: Buffer): void {
    const o = this.open;
    if (!o || o.got + data.length > o.size) throw new AirlockError("GUEST_PROTOCOL", "file data outside a declared file");
    if (o.fd >= 0) for (let off = 0; off < data.length; ) off += writeSync(o.fd, data, off);
    o.got += data.length;
    if (o.got === o.size) this.openFinish();
  }

  private openFinish(): void {
    const o = this.open!;
    if (o.fd >= 0) {
      fsyncSync(o.fd);
      closeSync(o.fd);
      this.report.written.push({ output: o.output, file: o.file, bytes: o.size });
    }
    this.open = undefined;
  }

  /** Expects a file's data next. */
  get inFile(): boolean {
    return this.open !== undefined;
  }

  /** Puts every staged file in place (the firewall said the run released them). */
  commit(): void {
    if (this.sealed || this.open) throw new AirlockError("GUEST_PROTOCOL", "the firewall completed its outputs inside a file");
    if (!existsSync(this.staging)) return;
    for (const e of readdirSync(this.staging)) renameSync(path.join(this.staging, e), path.join(this.out, e));
    rmSync(this.staging, { recursive: true, force: true });
  }

  /** Removes whatever was staged (the run did not complete). */
  discard(): void {
    for (const f of [this.sealed?.fd, this.open?.fd]) if (f !== undefined && f >= 0) closeSync(f);
    this.sealed = undefined;
    this.open = undefined;
    rmSync(this.staging, { recursive: true, force: true });
    this.report.written = [];
  }
}
