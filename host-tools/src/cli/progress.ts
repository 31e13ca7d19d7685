// Progress lines on stderr for long operations (image builds, boots). One line per step; on a
// terminal, fractions update in place.
export function progressPrinter(prefix = ""): (label: string, step: string, fraction?: number) => void {
  const tty = process.stderr.isTTY;
  let open = false;
  return (label, step, fraction) => {
    const text = `${prefix}${label}: ${step}${fraction === undefined ? "" : ` ${Math.round(fraction * 100)}%`}`;
    if (tty && fraction !== undefined && fraction < 1) {
      process.stderr.write(`\r\x1b[K${text}`);
      open = true;
      return;
    }
    process.stderr.write(`${open && tty ? "\r\x1b[K" : ""}${text}\n`);
    open = false;
  };
}
