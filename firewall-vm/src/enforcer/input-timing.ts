// Where an input's time goes on its way into the sandbox (host → firewall → agent, which opens the
// age payload and writes it to tmpfs), so the data path's slowest hop can be named (`npm run bench
// -- datapath` reads it from the audit trail). The firewall's loop is sequential: its time is the
// waits for the host's bytes and the waits for the agent to take them (and to place the file); the
// agent times its own payload opening and tmpfs writes (InputPlaced, sent before any workload ran).
// Inputs flow towards the sandbox: their timing says nothing of the sandbox's data. The enforcer's
// memory (before and at its peak) is recorded beside, to show it bounded.

/** Bytes per data frame to the agent: the host's pieces of the payload are gathered up to this. */
export const INPUT_FRAME = 1024 * 1024;

export class InputTiming {
  private readonly start = performance.now();
  private host = 0;
  private agent = 0;
  /** The enforcer's resident memory before the input, and its peak while the input passed (bytes). */
  private readonly rssBefore = process.memoryUsage.rss();
  private rssPeak = this.rssBefore;

  /** Passes the host's bytes on, timing the waits for them. */
  fromHost(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    return timed(source, (ms) => {
      this.host += ms;
      // What the input costs the firewall in memory: bounded whatever its size (test/room/large-input.test.ts).
      this.rssPeak = Math.max(this.rssPeak, process.memoryUsage.rss());
    });
  }

  /** Times a wait on the agent (sending it the payload, or its answer); host waits inside are taken out in report(). */
  async toAgent<T>(p: Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await p;
    } finally {
      this.agent += performance.now() - t;
    }
  }

  /** Milliseconds: the whole, each hop's share, and the agent's own account of opening and writing. */
  report(agent: { openMs: number; writeMs: number }): { ms: number; hostMs: number; agentMs: number; openMs: number; writeMs: number; rssMiB: number; rssPeakMiB: number } {
    const r = Math.round;
    const mib = (b: number): number => r(b / 1048576);
    return { ms: r(performance.now() - this.start), hostMs: r(this.host), agentMs: r(Math.max(0, this.agent - this.host)), openMs: agent.openMs, writeMs: agent.writeMs, rssMiB: mib(this.rssBefore), rssPeakMiB: mib(this.rssPeak) };
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
