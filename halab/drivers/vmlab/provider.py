"""The libvirt resources of the program, created the way terraform-provider-libvirt v0.8.1
(pulumi-libvirt 0.5.4) creates them, so a guest sees what the real provider would give it.

Read from the provider's source at v0.8.1: `libvirt/domain_def.go` (newDomainDef: hvm, PAE,
ACPI, APIC, a guest-agent channel, a virtio RNG on /dev/urandom, SPICE graphics unless the
resource says otherwise), `domain.go` (disks as pool volumes on virtio vdX; the cloud-init ISO
as an IDE cdrom `hdd` with serial `cloudinit`; virtio NICs with the given MAC on the network by
name; consoles), `resource_libvirt_domain.go` (define, autostart, start; an update swaps the
cloud-init cdrom in place and sets autostart, everything else replaces), `network_def.go` and
`resource_libvirt_network.go` (NAT with ports 1024-65535, an STP bridge libvirt names, the
first address of each CIDR, DHCP as asked), `cloudinit_def.go` (`mkisofs -volid cidata
-joliet -rock` over user-data, meta-data and network-config, uploaded as a raw volume; the ID
is "volume key;uuid"), `volume.go` (a source image uploaded as is, a backing-store volume on
another volume by key).

One addition the guest cannot see: each serial console also logs to a file on the host, so a
failed step can show the guest's console.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from halab.drivers.vmlab import schema

Run = Callable[..., Any]  # Hypervisor.run: (argv or shell text, input=...) -> CompletedProcess


class ProviderError(RuntimeError):
    pass


def _xml(el: ET.Element) -> str:
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def transform(xml: str, xslt: str) -> str:
    """utils_xslt.go transformXML: the resource's XSLT applied by xsltproc on the machine that
    runs the provider (--nomkdir --nonet --nowrite); an empty one is a no-op."""
    if not xslt.strip():
        return xml
    with tempfile.TemporaryDirectory(prefix="halab-xslt-") as d:
        (Path(d) / "t.xsl").write_text(xslt.strip())
        (Path(d) / "d.xml").write_text(xml)
        p = subprocess.run(
            ["xsltproc", "--nomkdir", "--nonet", "--nowrite", f"{d}/t.xsl", f"{d}/d.xml"],
            capture_output=True,
            text=True,
            check=False,
        )
    if p.returncode != 0:
        raise ProviderError(f"error applying XSLT stylesheet: {p.stderr.strip()}")
    return p.stdout


@dataclass
class Outcome:
    id: str
    outputs: dict[str, Any]


class Libvirt:
    """One provider instance: its URI, through the hypervisor's `run` (virsh inside the lab)."""

    CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"

    def __init__(self, uri: str, run: Run):
        if uri not in ("qemu:///system",):
            raise ProviderError(f"the VM lab runs a local libvirtd: provider URI {uri!r} is not qemu:///system")
        self.uri = uri
        self.run = run

    def virsh(self, *args: str, input: str | None = None, check: bool = True) -> str:
        p = self.run(["virsh", "-q", "-c", self.uri, *args], input=input, check=False)
        if check and p.returncode != 0:
            raise ProviderError(f"virsh {' '.join(args[:3])}: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout if p.returncode == 0 else ""

    def with_xml(self, *args: str, xml: str) -> str:
        """virsh ARGS FILE, FILE holding `xml` (a temp file on the hypervisor): define, create, update."""
        words = " ".join(shlex.quote(a) for a in args)
        p = self.run(
            f"f=$(mktemp) && cat >$f && virsh -q -c {self.uri} {words} $f; rc=$?; rm -f $f; exit $rc",
            input=xml,
            check=False,
        )
        if p.returncode != 0:
            raise ProviderError(f"virsh {words}: {p.stderr.strip()}\n{xml}")
        return p.stdout

    # -- capabilities ------------------------------------------------------------------------
    def guest(self, domain_type: str) -> tuple[str, str]:
        """(emulator, canonical machine) for x86_64 hvm, as newDomainDefForConnection finds them."""
        caps = ET.fromstring(self.virsh("capabilities"))
        for g in caps.findall("guest"):
            arch = g.find("arch")
            if g.findtext("os_type") != "hvm" or arch is None or arch.get("name") != "x86_64":
                continue
            emulator = arch.findtext("emulator") or ""
            for d in arch.findall("domain"):
                if d.get("type") == domain_type and d.findtext("emulator"):
                    emulator = d.findtext("emulator") or emulator
            machine = next((m.get("canonical") for m in arch.findall("machine") if m.text == "pc"), None)
            return emulator, machine or "pc"
        raise ProviderError("libvirt offers no x86_64 hvm guest")

    # -- networks ----------------------------------------------------------------------------
    def network_xml(self, i: dict[str, Any]) -> str:
        net = ET.Element("network")
        _sub(net, "name", i["name"])
        mode = i.get("mode", "nat")
        if mode != "isolated":
            fwd = _sub(net, "forward", mode=mode)
            if mode == "nat":
                nat = _sub(fwd, "nat")
                _sub(nat, "port", start="1024", end="65535")
        _sub(net, "bridge", **({"name": i["bridge"]} if i.get("bridge") else {}), stp="on")
        dns = i.get("dns") or {}
        if dns.get("enabled"):
            _sub(net, "dns", enable="yes")
        dhcp = (i.get("dhcp") or {}).get("enabled", True)
        for cidr in i.get("addresses") or []:
            n = ip_network(cidr, strict=False)
            ip = _sub(net, "ip", address=str(n.network_address + 1), netmask=str(n.netmask))
            if dhcp:
                r = _sub(ip, "dhcp")
                _sub(r, "range", start=str(n.network_address + 2), end=str(n.broadcast_address - 1))
        return _xml(net)

    def create_network(self, i: dict[str, Any]) -> Outcome:
        self.with_xml("net-define", xml=self.network_xml(i))
        self.virsh("net-start", i["name"])
        if i.get("autostart"):
            self.virsh("net-autostart", i["name"])
        return Outcome(self.virsh("net-uuid", i["name"]).strip(), dict(i))

    def update_network(self, rid: str, old: dict[str, Any], new: dict[str, Any]) -> Outcome:
        """resourceLibvirtNetworkUpdate: starts it if inactive, and autostart (dns.hosts too,
        which the program never sets); the rest of an update is ignored (schema.py)."""
        self.virsh("net-start", rid, check=False)
        if old.get("autostart") != new.get("autostart"):
            self.virsh("net-autostart", *([] if new.get("autostart") else ["--disable"]), rid)
        return Outcome(rid, dict(new))

    def delete_network(self, rid: str) -> None:
        self.virsh("net-destroy", rid, check=False)
        self.virsh("net-undefine", rid, check=False)

    def network_exists(self, rid: str) -> bool:
        return bool(self.virsh("net-info", rid, check=False))

    # -- volumes -----------------------------------------------------------------------------
    def _volume_path(self, key: str) -> str:
        return self.virsh("vol-path", key).strip()

    def create_volume(self, i: dict[str, Any]) -> Outcome:
        pool, name, fmt = i.get("pool", "default"), i["name"], i.get("format", "qcow2")
        vol = ET.Element("volume")
        _sub(vol, "name", name)
        target = _sub(vol, "target")
        _sub(target, "format", type=fmt)
        if i.get("source"):
            src = i["source"]
            if not src.startswith("/"):
                raise ProviderError(f"the VM lab uploads local images only, not {src}")
            info = json.loads(self.run(["qemu-img", "info", "--output=json", src]).stdout)
            _sub(vol, "capacity", str(info["virtual-size"]), unit="B")
        else:
            size = int(i.get("size") or 0)
            if i.get("baseVolumeId"):
                base_path = self._volume_path(i["baseVolumeId"])
                base_info = json.loads(self.run(["qemu-img", "info", "--output=json", base_path]).stdout)
                size = max(size, int(base_info["virtual-size"]))
                bs = _sub(vol, "backingStore")
                _sub(bs, "path", base_path)
                _sub(bs, "format", type=base_info["format"])
            _sub(vol, "capacity", str(size), unit="B")
        self.with_xml("vol-create", pool, xml=_xml(vol))
        if i.get("source"):
            self.virsh("vol-upload", "--pool", pool, name, i["source"])
        key = self.virsh("vol-key", "--pool", pool, name).strip()
        return Outcome(key, dict(i))

    def delete_volume(self, rid: str) -> None:
        self.virsh("vol-delete", rid.split(";")[0], check=False)

    def volume_exists(self, rid: str) -> bool:
        return bool(self.virsh("vol-info", rid.split(";")[0], check=False))

    # -- cloud-init disks --------------------------------------------------------------------
    def create_cloudinit(self, i: dict[str, Any]) -> Outcome:
        pool, name = i.get("pool", "default"), i["name"]
        files = {"user-data": i.get("userData", ""), "meta-data": i.get("metaData", ""),
                 "network-config": i.get("networkConfig", "")}  # fmt: skip
        # the same mkisofs call as cloudinit_def.go createISO(), then a raw volume of its size
        script = (
            "set -euo pipefail; d=$(mktemp -d); trap 'rm -rf $d' EXIT; "
            'python3 -c \'import json,sys,os; [open(os.path.join(sys.argv[1],k),"w").write(v) '
            "for k,v in json.load(sys.stdin).items()]' $d; "
            f"mkisofs -quiet -output $d/{shlex.quote(name)} -volid cidata -joliet -rock "
            "$d/user-data $d/meta-data $d/network-config; "
            f"size=$(stat -c %s $d/{shlex.quote(name)}); "
            f'printf \'<volume><name>%s</name><capacity unit="B">%s</capacity><target><format type="raw"/>'
            f"</target></volume>' {shlex.quote(name)} $size >$d/vol.xml; "
            f"virsh -q -c {self.uri} vol-create {shlex.quote(pool)} $d/vol.xml >/dev/null; "
            f"virsh -q -c {self.uri} vol-upload --pool {shlex.quote(pool)} {shlex.quote(name)} $d/{shlex.quote(name)}"
        )
        p = self.run(script, input=json.dumps(files))
        if p.returncode != 0:
            raise ProviderError(f"cloud-init disk {name}: {p.stderr.strip()}")
        key = self.virsh("vol-key", "--pool", pool, name).strip()
        return Outcome(f"{key};{uuid.uuid4()}", dict(i))

    # -- domains -----------------------------------------------------------------------------
    def cloudinit_disk(self, ci_id: str) -> ET.Element:
        """newDiskForCloudInit: the ISO as a raw file on an IDE cdrom, hdd."""
        disk = ET.Element("disk", type="file", device="cdrom")
        _sub(disk, "driver", name="qemu", type="raw")
        _sub(disk, "source", file=self._volume_path(ci_id.split(";")[0]))
        _sub(disk, "target", dev="hdd", bus="ide")
        _sub(disk, "serial", "cloudinit")
        return disk

    def domain_xml(self, i: dict[str, Any]) -> str:
        dtype = i.get("type", "kvm")
        emulator, machine = self.guest(dtype)
        dom = ET.Element("domain", type=dtype)
        _sub(dom, "name", i["name"])
        _sub(dom, "memory", str(int(i.get("memory", 512))), unit="MiB")
        _sub(dom, "vcpu", str(int(i.get("vcpu", 1))))
        os_ = _sub(dom, "os")
        _sub(os_, "type", "hvm", arch="x86_64", machine=machine)
        feats = _sub(dom, "features")
        for f in ("pae", "acpi", "apic"):
            _sub(feats, f)
        cpu = i.get("cpu") or {}
        _sub(dom, "cpu", **({"mode": cpu["mode"]} if cpu.get("mode") else {}))
        dev = _sub(dom, "devices")
        _sub(dev, "emulator", emulator)
        for n, d in enumerate(i.get("disks") or []):
            key = d["volumeId"]
            pool_name = self.virsh("vol-pool", key).strip()
            info = ET.fromstring(self.virsh("vol-dumpxml", key))
            fmt = info.find("target/format")
            disk = _sub(dev, "disk", type="volume", device="disk")
            _sub(disk, "driver", name="qemu", type=fmt.get("type", "raw") if fmt is not None else "raw")
            _sub(disk, "source", pool=pool_name, volume=info.findtext("name") or "")
            _sub(disk, "target", dev=f"vd{chr(ord('a') + n)}", bus="virtio")
        if i.get("cloudinit"):
            dev.append(self.cloudinit_disk(i["cloudinit"]))
        for nic in i.get("networkInterfaces") or []:
            iface = _sub(dev, "interface", type="network" if nic.get("networkId") else "bridge")
            _sub(iface, "mac", address=nic["mac"].upper())
            if nic.get("networkId"):
                net = self.virsh("net-name", nic["networkId"]).strip()
                _sub(iface, "source", network=net)
            else:
                _sub(iface, "source", bridge=nic["bridge"])
            _sub(iface, "model", type="virtio")
        for c in i.get("consoles") or []:
            con = _sub(dev, "console", type=c.get("type", "pty"))
            _sub(con, "target", type=c.get("targetType", "serial"), port=str(c.get("targetPort", "0")))
            _sub(con, "log", file=f"{self.CONSOLE_LOG_DIR}/{i['name']}-console.log", append="on")
        ch = _sub(dev, "channel", type="unix")
        _sub(ch, "target", type="virtio", name="org.qemu.guest_agent.0")
        g = i.get("graphics")
        if g is None:  # newDomainDef's default
            _sub(dev, "graphics", type="spice", autoport="yes")
        else:
            gr = _sub(dev, "graphics", type=g["type"], autoport="yes" if g.get("autoport", True) else "no")
            lt = g.get("listenType", "none")
            if lt == "address":
                _sub(gr, "listen", type="address", address=g.get("listenAddress", "127.0.0.1"))
            elif lt in ("network", "socket"):
                _sub(gr, "listen", type=lt)
            else:
                _sub(gr, "listen", type="none")
        rng = _sub(dev, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
        return transform(_xml(dom), (i.get("xml") or {}).get("xslt", ""))

    def create_domain(self, i: dict[str, Any]) -> Outcome:
        self.with_xml("define", xml=self.domain_xml(i))
        if i.get("autostart"):
            self.virsh("autostart", i["name"])
        if i.get("running", True):
            self.virsh("start", i["name"])
        return Outcome(self.virsh("domuuid", i["name"]).strip(), dict(i))

    def update_domain(self, rid: str, old: dict[str, Any], new: dict[str, Any]) -> Outcome | None:
        """resourceLibvirtDomainUpdate: the cloud-init disk and autostart change in place, every
        other change the engine plans as an update is ignored (schema.py), yet recorded in the
        state as the real provider's is; None for a ForceNew change (a replacement)."""
        if schema.plan(schema.DOMAIN, old, new, []) == "replace":
            return None
        self.virsh("start", rid, check=False)  # it starts a stopped domain, whatever the change
        if old.get("cloudinit") != new.get("cloudinit") and new.get("cloudinit"):
            # DomainUpdateDeviceFlags(config|current|live), as the provider does
            self.with_xml("update-device", "--config", "--live", rid, xml=_xml(self.cloudinit_disk(new["cloudinit"])))
        if old.get("autostart") != new.get("autostart"):
            self.virsh("autostart", *([] if new.get("autostart") else ["--disable"]), rid)
        return Outcome(rid, dict(new))

    def delete_domain(self, rid: str) -> None:
        self.virsh("destroy", rid, check=False)
        self.virsh("undefine", rid, check=False)

    def domain_exists(self, rid: str) -> bool:
        return bool(self.virsh("dominfo", rid, check=False))
