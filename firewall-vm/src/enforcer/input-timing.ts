// Where an input's time goes on its way through the firewall (host → decrypt → agent), so the
// data path's slowest hop can be named (`npm run bench -- datapath` reads it from the audit trail).
// The loop is sequential, so the hops' times add up to (nearly) the whole: waiting for the host's
// bytes, age decrypting them, and the agent taking them (its tmpfs writes are timed by the agent
// itself). They are wall times on one thread: what the loop does for another hop while one awaits
// (a socket's poll callback, a record sealed) is counted in the hop that was waiting.
// Inputs flow towards the sandbox: their timing says nothing of the sandbox's data. The
// enforcer's memory (before and at its peak) is recorded beside, to show it bounded.

/** Plaintext per data frame to the agent: age's 64 KiB chunks are gathered up to this. */
export const INPUT_FRAME = 1024 * 1024;

export class InputTiming {
  private readonly start = performance.now();
  private host = 0;
  private decrypt = 0;
  private agent = 0;
  /** The enforcer's resident memory before the input, and its peak while the input passed (bytes). */
  private readonly rssBefore = process.memoryUsage.rss();
  private rssPeak = this.rssBefore;

  /** Passes the host's bytes on, timing the waits for them. */
  fromHost(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    return timed(source, (ms) => (this.host += ms));
  }

  /** Passes the plaintext on, timing the decryptor (its waits for the host are taken out in report()). */
  decrypting(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    return timed(source, (ms) => {
      this.decrypt += ms;
      // What the input costs the firewall in memory: bounded whatever its size (test/room/large-input.test.ts).
      this.rssPeak = Math.max(this.rssPeak, process.memoryUsage.rss());
    });
  }

  /** Times a wait on the agent (a send, or its acknowledgement). */
  async toAgent<T>(p: Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await p;
    } finally {
      this.agent += performance.now() - t;
    }
  }

  /** Milliseconds: the whole, and each hop's share; `writeMs` is the agent's own account of its tmpfs writes. */
  report(writeMs: number): { ms: number; hostMs: number; decryptMs: number; agentMs: number; writeMs: number; rssMiB: number; rssPeakMiB: number } {
    const r = Math.round;
    const mib = (b: number): number => r(b / 1048576);
    return { ms: r(performance.now() - this.start), hostMs: r(this.host), decryptMs: r(this.decrypt - this.host), agentMs: r(this.agent), writeMs, rssMiB: mib(this.rssBefore), rssPeakMiB: mib(this.rssPeak) };
  }
}

async function* timed(source: AsyncIterable<Buffer>, add: (ms: number) => void): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  try {
    for (;;) {
      const t = performance.now();
      const r = await it.next();
      add(performance.now() - t);
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await it.return?.();
  }
}
