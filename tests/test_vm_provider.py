"""The VM lab's stand-ins for the engine and the provider, without libvirt: the XML a guest gets
is the one terraform-provider-libvirt v0.8.1 writes for the program's inputs, and the engine
decides create/update/replace/same as `pulumi up` does."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from halab.core import render
from halab.drivers.vmlab.engine import COMMAND, Engine, Entry, State
from halab.drivers.vmlab.provider import Libvirt, ProviderError

CAPS = """<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>
<emulator>/usr/bin/qemu-system-x86_64</emulator>
<machine maxCpus='255'>pc-i440fx-7.2</machine><machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
<domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>"""

ANSWERS = {
    "capabilities": CAPS,
    "vol-pool": "default\n",
    "vol-dumpxml": "<volume><name>halab-lb1-root-1234.qcow2</name><target><format type='qcow2'/></target></volume>",
    "vol-path": "/var/lib/libvirt/images/halab-lb1-cloudinit-abcd.iso\n",
    "net-name": "halab\n",
    "start": "",  # an update starts a stopped domain (the provider does, whatever changed)
}


SHELL_CALLS: list[tuple[str, str | None]] = []  # (script, its input): virsh with an XML file


def fake_run(argv, input=None, check=True):
    """virsh as the provider's calls need it answered."""
    if isinstance(argv, str):
        SHELL_CALLS.append((argv, input))
        return subprocess.CompletedProcess(argv, 0, "", "")
    verb = next(a for a in argv[argv.index("qemu:///system") + 1 :] if not a.startswith("-"))
    return subprocess.CompletedProcess(argv, 0, ANSWERS[verb], "")


DOMAIN = {
    "name": "halab-lb1",
    "type": "qemu",
    "memory": 1024.0,
    "vcpu": 1.0,
    "autostart": True,
    "cloudinit": "/var/lib/libvirt/images/halab-lb1-cloudinit-abcd.iso;5f3c",
    "disks": [{"volumeId": "/var/lib/libvirt/images/halab-lb1-root-1234.qcow2"}],
    "networkInterfaces": [{"mac": "52:54:00:a8:45:6f", "waitForLease": False, "networkId": "uuid-of-halab"}],
    "consoles": [{"type": "pty", "targetPort": "0", "targetType": "serial"}],
    "graphics": {"type": "vnc", "listenType": "none", "autoport": True},
}


def test_domain_xml_is_the_providers():
    dom = ET.fromstring(Libvirt("qemu:///system", fake_run).domain_xml(DOMAIN))
    assert dom.get("type") == "qemu" and dom.findtext("name") == "halab-lb1"
    assert dom.find("os/type").get("machine") == "pc-i440fx-7.2"  # the canonical machine of `pc`
    assert [f.tag for f in dom.find("features")] == ["pae", "acpi", "apic"]
    assert dom.find("cpu").attrib == {}  # no mode given (qemu): the provider's empty <cpu/>
    disk, cdrom = dom.findall("devices/disk")
    assert disk.get("type") == "volume" and disk.find("source").attrib == {
        "pool": "default",
        "volume": "halab-lb1-root-1234.qcow2",
    }
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert disk.find("driver").get("type") == "qcow2"
    assert cdrom.get("device") == "cdrom" and cdrom.findtext("serial") == "cloudinit"
    assert cdrom.find("target").attrib == {"dev": "hdd", "bus": "ide"}
    nic = dom.find("devices/interface")
    assert nic.find("mac").get("address") == "52:54:00:A8:45:6F"  # upper-cased, as the provider does
    assert nic.find("source").get("network") == "halab" and nic.find("model").get("type") == "virtio"
    assert dom.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    assert dom.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert dom.find("devices/rng/backend").text == "/dev/urandom"
    graphics = dom.find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.find("listen").get("type") == "none"


def test_the_root_disk_is_a_qcow2_file_after_the_programs_xslt():
    """The XML libvirt defines for the program's domain: the provider's volume disk turned by
    the domain's XSLT (xsltproc, as utils_xslt.go runs it) into a file disk at the volume's
    path, the qcow2 driver kept; virt-aa-helper reads a file disk's backing chain."""
    root = DOMAIN["disks"][0]["volumeId"]
    xml = Libvirt("qemu:///system", fake_run).domain_xml({**DOMAIN, "xml": {"xslt": render.domain_disk_xslt(root)}})
    disk, cdrom = ET.fromstring(xml).findall("devices/disk")
    assert disk.get("type") == "file" and disk.get("device") == "disk"
    assert disk.find("source").attrib == {"file": root}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    assert cdrom.get("type") == "file" and cdrom.findtext("serial") == "cloudinit"  # untouched


def test_without_graphics_the_provider_gives_spice():
    """Finding 7, as newDomainDef has it: no graphics block means SPICE."""
    dom = ET.fromstring(Libvirt("qemu:///system", fake_run).domain_xml({**DOMAIN, "graphics": None}))
    assert dom.find("devices/graphics").attrib == {"type": "spice", "autoport": "yes"}


def test_network_xml_is_the_providers():
    net = ET.fromstring(
        Libvirt("qemu:///system", fake_run).network_xml(
            {
                "name": "halab",
                "mode": "nat",
                "addresses": ["192.168.69.0/24"],
                "dhcp": {"enabled": False},
                "dns": {"enabled": True, "localOnly": False},
            }  # fmt: skip
        )
    )
    assert net.find("forward").get("mode") == "nat"
    assert net.find("forward/nat/port").attrib == {"start": "1024", "end": "65535"}
    assert net.find("bridge").attrib == {"stp": "on"}  # libvirt names the bridge
    assert net.find("ip").attrib == {"address": "192.168.69.1", "netmask": "255.255.255.0"}
    assert net.find("ip/dhcp") is None and net.find("dns").get("enable") == "yes"


def test_only_cloud_init_and_autostart_change_a_domain_in_place():
    """resourceLibvirtDomainUpdate: a new cloud-init disk is swapped into the running domain
    (update-device, config and live) under the same ID; anything else is no update at all."""
    lv = Libvirt("qemu:///system", fake_run)
    assert lv.update_domain("uuid", DOMAIN, {**DOMAIN, "memory": 2048.0}) is None
    SHELL_CALLS.clear()
    out = lv.update_domain("uuid", DOMAIN, {**DOMAIN, "cloudinit": "/var/lib/libvirt/images/new.iso;77"})
    assert out is not None and out.id == "uuid"
    ((script, xml),) = SHELL_CALLS
    assert "update-device --config --live uuid" in script
    cdrom = ET.fromstring(xml)
    assert cdrom.get("device") == "cdrom" and cdrom.find("target").get("dev") == "hdd"


def test_the_lab_refuses_a_remote_provider():
    with pytest.raises(ProviderError, match="qemu\\+ssh"):
        Libvirt("qemu+ssh://me@hv/system", fake_run)


@pytest.fixture
def engine(tmp_path):
    return Engine(State(tmp_path / "state.json"), fake_run, lambda argv: argv, log=lambda _: None)


def NIC(mac: str) -> dict:  # noqa: N802 (reads as the block it builds)
    return {"networkInterfaces": [{"mac": mac, "networkId": "n"}]}


def entry(typ: str, **inputs) -> Entry:
    return Entry("urn:x", typ, "id", inputs, inputs)


@pytest.mark.parametrize(
    ("typ", "old", "new", "replace_on", "updatable"),
    [
        # pulumi-command: triggers replace (as its SDK registers every Command); any other change
        # runs `create` again (an update), as does a trigger without that registration
        (COMMAND, {"triggers": ["a"], "stdin": "x"}, {"triggers": ["b"], "stdin": "y"}, ["triggers[*]"], False),
        (COMMAND, {"triggers": ["a"], "stdin": "x"}, {"triggers": ["a"], "stdin": "y"}, ["triggers[*]"], True),
        (COMMAND, {"triggers": ["a"]}, {"triggers": ["b"]}, [], True),
        # the provider: a domain's cloud-init disk and autostart in place, the rest ForceNew ...
        ("libvirt:index/domain:Domain", {"cloudinit": "a"}, {"cloudinit": "b"}, [], True),
        ("libvirt:index/domain:Domain", {"memory": 1}, {"memory": 2}, [], False),
        # ... unless the program asks for a replacement (finding 8)
        ("libvirt:index/domain:Domain", {"cloudinit": "a"}, {"cloudinit": "b"}, ["cloudinit"], False),
        # a field inside a block is not ForceNew: an update, which the provider then ignores ...
        ("libvirt:index/domain:Domain", {"disks": [{"volumeId": "a"}]}, {"disks": [{"volumeId": "b"}]}, [], True),
        ("libvirt:index/domain:Domain", NIC("52:54:00:00:00:01"), NIC("52:54:00:00:00:02"), [], True),
        # ... so the program names those blocks; a new count of disks is ForceNew
        (
            "libvirt:index/domain:Domain",
            NIC("52:54:00:00:00:01"),
            NIC("52:54:00:00:00:02"),
            ["networkInterfaces"],
            False,
        ),  # fmt: skip
        ("libvirt:index/domain:Domain", {"disks": [{"volumeId": "a"}]}, {"disks": []}, [], False),
        ("libvirt:index/network:Network", {"mode": "nat"}, {"mode": "route"}, [], False),
        ("libvirt:index/network:Network", {"dns": {"enabled": True}}, {"dns": {"enabled": False}}, [], True),
        ("libvirt:index/volume:Volume", {"size": 1}, {"size": 2}, [], False),
    ],
)
def test_the_engine_updates_or_replaces_as_pulumi_up_does(engine, typ, old, new, replace_on, updatable):
    assert engine._updatable(typ, entry(typ, **old), new, replace_on) is updatable
