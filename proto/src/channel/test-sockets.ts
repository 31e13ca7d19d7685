// TEST ONLY. Real Unix sockets for the channel's tests and bench: a connected pair, and a relay
// standing where the host's vsock fabric stands — it sees every byte, records them, and can
// drop, duplicate, reorder, alter or cut the frames it forwards.
import net from "node:net";
import path from "node:path";

let counter = 0;

/** A listener on a fresh socket path in `dir`; each accepted socket is passed to onSocket. */
export async function listen(dir: string, onSocket: (s: net.Socket) => void, options: { allowHalfOpen?: boolean } = {}): Promise<{ path: string; close(): Promise<void> }> {
  const p = path.join(dir, `s${process.pid}-${counter++}.sock`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen ?? false }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    onSocket(s);
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(p, resolve));
  return {
    path: p,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export function connect(p: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(p);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

/** A connected pair of Unix sockets: `client` connected to `server`. */
export async function socketPair(dir: string): Promise<{ client: net.Socket; server: net.Socket; close(): Promise<void> }> {
  let accepted!: (s: net.Socket) => void;
  const got = new Promise<net.Socket>((resolve) => (accepted = resolve));
  const l = await listen(dir, (s) => accepted(s));
  const client = await connect(l.path);
  const server = await got;
  return {
    client,
    server,
    close: async () => {
      client.destroy();
      await l.close();
    },
  };
}

/** Decides what is forwarded for each frame (u32be length ‖ body) of one direction. */
export type FrameHook = (frame: Buffer, index: number) => Buffer[] | "cut";

export interface Relay {
  /** Where the client connects. */
  path: string;
  /** Every byte forwarded, per direction. */
  wire: { c2s: Buffer[]; s2c: Buffer[] };
  /** Cuts every connection abruptly. */
  destroyAll(): void;
  close(): Promise<void>;
}

/** Forwards connections on a new path to `target`, frame by frame, through the hooks. */
export async function startRelay(dir: string, target: string, hooks: { c2s?: FrameHook; s2c?: FrameHook } = {}): Promise<Relay> {
  const wire = { c2s: [] as Buffer[], s2c: [] as Buffer[] };
  const open = new Set<net.Socket>();
  const pipe = (from: net.Socket, to: net.Socket, hook: FrameHook | undefined, log: Buffer[]): void => {
    let buf = Buffer.alloc(0);
    let index = 0;
    let cut = false;
    from.on("data", (chunk: Buffer) => {
      if (cut) return;
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const frame = buf.subarray(0, 4 + buf.readUInt32BE(0));
        buf = buf.subarray(frame.length);
        const out = hook ? hook(Buffer.from(frame), index++) : [frame];
        if (out === "cut") {
          cut = true;
          to.end();
          return;
        }
        for (const f of out) {
          log.push(Buffer.from(f));
          to.write(f);
        }
      }
    });
    from.on("end", () => {
      if (!cut) to.end();
    });
  };
  const l = await listen(dir, (client) => {
    // Half-open both ways: the relay passes each direction's end on its own, as the fabric does.
    const server = net.createConnection({ path: target, allowHalfOpen: true });
    open.add(client).add(server);
    for (const s of [client, server]) {
      s.on("error", () => undefined);
      s.on("close", () => {
        open.delete(s);
        client.destroy();
        server.destroy();
      });
    }
    pipe(client, server, hooks.c2s, wire.c2s);
    pipe(server, client, hooks.s2c, wire.s2c);
  }, { allowHalfOpen: true });
  return {
    path: l.path,
    wire,
    destroyAll: () => open.forEach((s) => s.destroy()),
    close: async () => {
      open.forEach((s) => s.destroy());
      await l.close();
    },
  };
}
