// Ctrl-C, SIGTERM and SIGHUP stop what a command started, in order; a second signal forces the
// exit (the VMs still die with us: QEMU runs under setpriv --pdeathsig).
export function handleSignals(onSignal: (signal: NodeJS.Signals) => void): () => void {
  let seen = 0;
  const handler = (sig: NodeJS.Signals): void => {
    seen++;
    if (seen > 1) {
      process.stderr.write(`airlock: second ${sig}, exiting at once\n`);
      process.exit(130);
    }
    process.stderr.write(`airlock: ${sig} received, stopping\n`);
    onSignal(sig);
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}
