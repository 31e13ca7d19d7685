// Pulls exact byte counts and bounded lines out of an async iterable of chunks of any size, so
// the parsers never hold more than one payload chunk (plus one source chunk) in memory.
/**
 * Bytes in chunks of any size: a Node stream, an async generator, or an array of buffers. A piece
 * must not be modified after it was handed over (Node streams never do).
 */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export class ByteReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #bufs: Buffer[] = [];
  #len = 0;
  #done = false;
  /** Bytes handed out so far (for error messages that name an offset). */
  consumed = 0;

  constructor(source: ByteSource) {
    this.#it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : toAsync(source[Symbol.iterator]());
  }

  /** Buffers until at least n bytes are held or the source ends; returns whether n are held. */
  async fill(n: number): Promise<boolean> {
    while (this.#len < n && !this.#done) {
      const r = await this.#it.next();
      if (r.done) {
        this.#done = true;
        break;
      }
      if (r.value.length === 0) continue;
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
      this.#bufs.push(b);
      this.#len += b.length;
    }
    return this.#len >= n;
  }

  #flat(): Buffer {
    if (this.#bufs.length > 1) this.#bufs = [Buffer.concat(this.#bufs, this.#len)];
    return this.#bufs[0] ?? Buffer.alloc(0);
  }

  /** The held bytes without consuming them (at most n). */
  async peek(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.#flat().subarray(0, n);
  }

  /** Up to n bytes; fewer only when the source ended. Copies only a read that straddles pieces. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const first = this.#bufs[0];
    let out: Buffer;
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#bufs.shift();
      else this.#bufs[0] = first.subarray(n);
    } else {
      const take = Math.min(n, this.#len);
      out = Buffer.allocUnsafe(take);
      let off = 0;
      while (off < take) {
        const b = this.#bufs[0]!;
        const k = Math.min(b.length, take - off);
        b.copy(out, off, 0, k);
        off += k;
        if (k === b.length) this.#bufs.shift();
        else this.#bufs[0] = b.subarray(k);
      }
    }
    this.#len -= out.length;
    this.consumed += out.length;
    return out;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }

  /**
   * The next line without its "\n"; null at the end of the source. `tooLong` is thrown when no
   * newline comes within max bytes, `unterminated` when the source ends mid-line.
   */
  async readLine(max: number, tooLong: () => Error, unterminated: () => Error): Promise<Buffer | null> {
    let searched = 0;
    for (;;) {
      const all = this.#flat();
      const i = all.indexOf(0x0a, searched);
      if (i >= 0) {
        if (i > max) throw tooLong();
        const line = (await this.read(i + 1)).subarray(0, i);
        return line;
      }
      searched = all.length;
      if (searched > max) throw tooLong();
      if (!(await this.fill(all.length + 1))) {
        if (this.#len === 0) return null;
        throw unterminated();
      }
    }
  }

  /** Everything not yet consumed, as an async iterable (held bytes first). */
  async *rest(): AsyncGenerator<Buffer> {
    if (this.#len) {
      const held = this.#flat();
      this.#bufs = [];
      this.#len = 0;
      yield held;
    }
    while (!this.#done) {
      const r = await this.#it.next();
      if (r.done) break;
      yield Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
    }
    this.#done = true;
  }
}

function toAsync(it: Iterator<Uint8Array>): AsyncIterator<Uint8Array> {
  return { next: async () => it.next() };
}
