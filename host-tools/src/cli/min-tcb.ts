// `--min-tcb` (verify-report, kbs add-key) is command-line text, so the CLI parses it: its mistakes
// are usage errors, and the libraries take the parsed TcbVersion fields.
import { AirlockError } from "../../../proto/src/errors.ts";
import { decodeTcb, type Product, type TcbVersion } from "../../../proto/src/attestation/report.ts";

/** Parses "bootloader=3,tee=0,snp=8,microcode=115[,fmc=N]" or a raw TCB_VERSION "0x…" (decoded for the product). */
export function parseMinTcb(text: string, product: Product | undefined): Partial<TcbVersion> {
  const bad = (): AirlockError => new AirlockError("USAGE", `--min-tcb "${text}": expected bootloader=N,tee=N,snp=N,microcode=N[,fmc=N] or a 64-bit hex TCB_VERSION`);
  if (/^0x[0-9a-f]{1,16}$/i.test(text)) {
    if (!product) throw new AirlockError("USAGE", "--min-tcb as a raw TCB_VERSION needs --product (the byte layout differs)");
    return decodeTcb(BigInt(text), product);
  }
  const out: Partial<TcbVersion> = {};
  for (const part of text.split(",")) {
    const m = /^(bootloader|tee|snp|microcode|fmc)=(\d{1,3})$/.exec(part.trim());
    if (!m || Number(m[2]) > 255) throw bad();
    out[m[1] as keyof TcbVersion] = Number(m[2]);
  }
  return out;
}
