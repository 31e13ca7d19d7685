// One process racing the others for the host: claims a pair (and host ports), prints the outcome
// as one JSON line, and keeps the claim until its stdin closes. `hold-lock` takes the host lock
// and never lets go (the test kills it to show a crashed holder frees the lock).
import { withHostLock } from "../../host-tools/src/fleet/host-lock.ts";
import { allocatePort, reservePair } from "../../host-tools/src/fleet/reservations.ts";
import { AirlockError } from "../../proto/src/errors.ts";

const [mode, name, memoryMiB, vcpus, ports] = process.argv.slice(2);
const say = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

if (mode === "hold-lock") {
  await withHostLock(() => {
    say({ locked: true });
    return new Promise(() => {});
  });
} else {
  try {
    const r = await reservePair({ name: name!, demand: { memoryMiB: Number(memoryMiB), vcpus: Number(vcpus) } });
    const got: number[] = [];
    for (let i = 0; i < Number(ports ?? 0); i++) got.push(await allocatePort(name!));
    say({ ok: true, slot: r.slot, ports: got });
  } catch (err) {
    const e = AirlockError.from(err);
    say({ ok: false, code: e.code, message: e.message });
  }
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}
