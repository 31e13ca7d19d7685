#!/usr/bin/env python3
# airlock's KubeVirt hook (sidecar-shim, hook point onDefineDomain): called by virt-launcher as
#   onDefineDomain --vmi VMI_JSON --domain DOMAIN_XML
# it prints the libvirt domain XML the VM is defined with. It adds what KubeVirt's API has no field
# for, from the VMI's airlock.dev/* annotations (written by `airlock k8s render`):
#   - the vhost-user vsock device, connected to the room's node-local fabric socket, with
#     iommu_platform=on (an SNP guest's virtio DMA goes through shared bounce buffers);
#   - shared memfd guest RAM, which a vhost-user backend needs to map;
#   - SNP HOST_DATA = the room's manifest digest, and kernel hashes on (measured direct boot).
# It fails closed (non-zero exit, the VM is not defined) on anything unexpected: a missing or
# malformed annotation, or any network interface in a sandbox domain.
import base64, json, re, sys
import xml.etree.ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
SOCKET_DIR = "/var/run/airlock/rooms"


def fail(msg):
    sys.stderr.write("airlock hook: %s\n" % msg)
    sys.exit(1)


def arg(name):
    argv = sys.argv[1:]
    if name not in argv or argv.index(name) + 1 >= len(argv):
        fail("missing %s" % name)
    return argv[argv.index(name) + 1]


def main():
    vmi = json.loads(arg("--vmi"))
    notes = (vmi.get("metadata") or {}).get("annotations") or {}
    room, role, digest = notes.get("airlock.dev/room", ""), notes.get("airlock.dev/role", ""), notes.get("airlock.dev/host-data", "")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", room):
        fail("airlock.dev/room is not a room name")
    if role not in ("firewall", "sandbox"):
        fail("airlock.dev/role must be firewall or sandbox")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        fail("airlock.dev/host-data must be the 64-hex-digit manifest digest")

    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.fromstring(arg("--domain"))
    if dom.tag != "domain":
        fail("not a libvirt domain")
    devices = dom.find("devices")
    if devices is None:
        fail("the domain has no <devices>")
    if role == "sandbox" and devices.find("interface") is not None:
        fail("the sandbox domain has a network interface; it must have none")
    for v in devices.findall("vsock"):
        devices.remove(v)  # never the kernel's vhost-vsock: its CIDs are host-global and it routes to the host

    mb = dom.find("memoryBacking")
    if mb is None:
        mb = ET.SubElement(dom, "memoryBacking")
    for tag, attr, value in (("source", "type", "memfd"), ("access", "mode", "shared")):
        el = mb.find(tag)
        if el is None:
            el = ET.SubElement(mb, tag)
        el.set(attr, value)

    ls = dom.find("launchSecurity")
    if ls is None or ls.get("type") != "sev-snp":
        fail("the domain has no SEV-SNP launchSecurity (spec.domain.launchSecurity.snp)")
    ls.set("kernelHashes", "yes")
    hd = ls.find("hostData")
    if hd is None:
        hd = ET.SubElement(ls, "hostData")
    hd.text = base64.b64encode(bytes.fromhex(digest)).decode()

    cl = dom.find("{%s}commandline" % QEMU_NS)
    if cl is None:
        cl = ET.SubElement(dom, "{%s}commandline" % QEMU_NS)
    for value in (
        "-chardev", "socket,id=airlock-vsock,path=%s/%s/%s.vhost" % (SOCKET_DIR, room, role),
        "-device", "vhost-user-vsock-pci,chardev=airlock-vsock,id=airlock-vsock,iommu_platform=on",
    ):
        ET.SubElement(cl, "{%s}arg" % QEMU_NS, {"value": value})
    sys.stdout.write(ET.tostring(dom, encoding="unicode"))


main()
