#!/usr/bin/env python3
# An independent, deliberately plain SNP launch-digest calculator used only by the randomized
# cross-check test (cross-check.test.ts). Written for airlock from the public facts (SNP ABI
# PAGE_INFO, Linux struct sev_es_save_area, QEMU's kernel-hashes table, edk2's OVMF footer);
# it shares no code with the TypeScript under test. The VMSA layout comes from a ctypes field
# list, so a wrong hand-computed offset on the TypeScript side shows up as a mismatch.
#
# stdin: one JSON case per line {ovmf, kernel, initrd, append, vcpus, sig, features, vmm}
# stdout: one hex digest (or "error: ...") per line.
import ctypes
import hashlib
import json
import struct
import sys
import uuid


def sha384(b):
    return hashlib.sha384(b).digest()


class Gctx:
    def __init__(self):
        self.ld = bytes(48)

    def page(self, ptype, gpa, contents):
        info = self.ld + contents + struct.pack("<HBB4BQ", 0x70, ptype, 0, 0, 0, 0, 0, gpa)
        assert len(info) == 0x70
        self.ld = sha384(info)


def footer_table(fw):
    table = {}
    end = len(fw) - 32 - 18
    if fw[end + 2:end + 18] != uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le:
        return table
    size = struct.unpack_from("<H", fw, end)[0]
    body = fw[end - (size - 18):end]
    while len(body) >= 18:
        esize = struct.unpack_from("<H", body, len(body) - 18)[0]
        guid = str(uuid.UUID(bytes_le=body[-16:]))
        table[guid] = body[len(body) - esize:len(body) - 18]
        body = body[:len(body) - esize]
    return table


def metadata(fw, table):
    e = table.get("dc886566-984a-4798-a75e-5585a7bf67cc")
    if e is None:
        return None
    start = len(fw) - struct.unpack_from("<I", e)[0]
    sig, _size, _ver, count = struct.unpack_from("<4sIII", fw, start)
    assert sig == b"ASEV"
    return [struct.unpack_from("<III", fw, start + 16 + 12 * i) for i in range(count)]


class Seg(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("selector", ctypes.c_uint16), ("attrib", ctypes.c_uint16), ("limit", ctypes.c_uint32), ("base", ctypes.c_uint64)]


U8, U16, U32, U64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class SaveArea(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = (
        [(n, Seg) for n in ("es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr")]
        + [(n, U64) for n in ("vmpl0_ssp", "vmpl1_ssp", "vmpl2_ssp", "vmpl3_ssp", "u_cet")]
        + [("r1", U8 * 2), ("vmpl", U8), ("cpl", U8), ("r2", U8 * 4), ("efer", U64), ("r3", U8 * 104)]
        + [(n, U64) for n in ("xss", "cr4", "cr3", "cr0", "dr7", "dr6", "rflags", "rip", "dr0", "dr1", "dr2", "dr3",
                              "dr0m", "dr1m", "dr2m", "dr3m")]
        + [("r4", U8 * 24)]
        + [(n, U64) for n in ("rsp", "s_cet", "ssp", "isst", "rax", "star", "lstar", "cstar", "sfmask", "kgs",
                              "sys_cs", "sys_esp", "sys_eip", "cr2")]
        + [("r5", U8 * 32)]
        + [(n, U64) for n in ("g_pat", "dbgctl", "br_from", "br_to", "lex_from", "lex_to")]
        + [("r7", U8 * 80), ("pkru", U32), ("r8", U8 * 20), ("r9", U64)]
        + [(n, U64) for n in ("rcx", "rdx", "rbx", "r10x", "rbp", "rsi", "rdi", "r8x", "r9x", "r10", "r11", "r12",
                              "r13", "r14", "r15")]
        + [("r11x", U8 * 16)]
        + [(n, U64) for n in ("ei1", "ei2", "eii", "nrip", "sev_features", "vintr", "ecode", "vtom", "tlb", "pcpu",
                              "event_inj", "xcr0")]
        + [("r12x", U8 * 16), ("x87_dp", U64), ("mxcsr", U32), ("ftw", U16), ("fsw", U16), ("fcw", U16), ("fop", U16),
           ("fds", U16), ("fcs", U16), ("x87_rip", U64), ("fx87", U8 * 80), ("xmm", U8 * 256), ("ymm", U8 * 256),
           ("unused", U8 * 2448)]
    )


assert ctypes.sizeof(SaveArea) == 4096


def vmsa(eip, sig, features, vmm):
    q = vmm == "qemu"
    a = SaveArea()
    a.es = Seg(0, 0x93, 0xffff, 0)
    a.cs = Seg(0xf000, 0x9b if (q or eip != 0xfffffff0) else 0x9a, 0xffff, eip & 0xffff0000)
    a.ss = Seg(0, 0x93 if q else 0x92, 0xffff, 0)
    a.ds = a.fs = a.gs = Seg(0, 0x93, 0xffff, 0)
    a.gdtr = a.idtr = Seg(0, 0, 0xffff, 0)
    a.ldtr = Seg(0, 0x82, 0xffff, 0)
    a.tr = Seg(0, 0x8b if q else 0x83, 0xffff, 0)
    a.efer, a.cr4, a.cr0, a.dr7, a.dr6, a.rflags = 0x1000, 0x40, 0x10, 0x400, 0xffff0ff0, 2
    a.rip = eip & 0xffff
    a.g_pat = 0x0007040600070406
    a.rdx = sig if q else 0
    a.sev_features = features
    a.xcr0 = 1
    a.mxcsr = 0x1f80 if q else 0
    a.fcw = 0x37f if q else 0
    return bytes(a)


def kernel_page(offset, kernel, initrd, append):
    def entry(g, h):
        return uuid.UUID(g).bytes_le + struct.pack("<H", 50) + h
    cmd = hashlib.sha256((append or "").encode() + b"\0").digest()
    t = uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21").bytes_le + struct.pack("<H", 168)
    t += entry("97d02dd8-bd20-4c94-aa78-e7714d36ab2a", cmd)
    t += entry("44baf731-3a2f-4bd7-9af1-41e29169781d", hashlib.sha256(open(initrd, "rb").read() if initrd else b"").digest())
    t += entry("4de79437-abd2-427f-b835-d5b172d2045b", hashlib.sha256(open(kernel, "rb").read()).digest())
    t += bytes(8)
    return bytes(offset) + t + bytes(4096 - offset - len(t))


def digest(c):
    fw = open(c["ovmf"], "rb").read()
    table = footer_table(fw)
    sections = metadata(fw, table)
    g = Gctx()
    base = 0x100000000 - len(fw)
    for off in range(0, len(fw), 4096):
        g.page(1, base + off, sha384(fw[off:off + 4096]))
    for gpa, size, kind in sections:
        if kind in (1, 4) or (kind == 0x10 and not c.get("kernel")):
            for off in range(0, size, 4096):
                g.page(3, gpa + off, bytes(48))
        elif kind == 2:
            g.page(5, gpa, bytes(48))
        elif kind == 3:
            if c["vmm"] != "ec2":
                g.page(6, gpa, bytes(48))
        elif kind == 0x10:
            rv = struct.unpack_from("<I", table["7255371f-3a3b-4b04-927b-1da6efa8d454"])[0]
            g.page(1, gpa, sha384(kernel_page(rv & 0xfff, c["kernel"], c.get("initrd"), c.get("append"))))
    if c["vmm"] == "ec2":
        for gpa, size, kind in sections:
            if kind == 3:
                g.page(6, gpa, bytes(48))
    ap = struct.unpack_from("<I", table["00f771de-1a7e-4fcb-890e-68c77e2fb44e"])[0]
    features = int(c["features"], 16)
    for i in range(c["vcpus"]):
        g.page(2, 0xFFFFFFFFF000, sha384(vmsa(0xfffffff0 if i == 0 else ap, c["sig"], features, c["vmm"])))
    return g.ld.hex()


for line in sys.stdin:
    if line.strip():
        try:
            print(digest(json.loads(line)))
        except Exception as e:  # reported per case so one bad case does not hide the others
            print(f"error: {e!r}")
