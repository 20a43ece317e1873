"""What terraform-provider-libvirt v0.8.1 (pulumi-libvirt 0.5.4) does with a changed input: a
replacement (the schema's ForceNew), an update it applies in place, or an update it plans and
then ignores (`pulumi up` reports success, the guest is unchanged).

Pinned to the provider's source at v0.8.1 (tag commit 1cd90b7), Pulumi's names for its
attributes. terraform-plugin-sdk v2 copies a block's ForceNew onto its item count only
(`helper/schema/schema.go`, diffList): a changed field inside a block replaces only when the
field itself is ForceNew. So `disks[0].volumeId` or a NIC's network is an ignored update.

- Domain (`libvirt/resource_libvirt_domain.go`, schema lines 46-478; Update 664-763: starts a
  stopped domain, swaps the cloud-init cdrom in, sets autostart, and for a NIC's mac, hostname
  or addresses edits the *network's* DHCP host entry, never the guest's interface).
- Network (`resource_libvirt_network.go`, schema 53-291; Update 297-338: starts it, autostart,
  dns.hosts).
- Volume (`resource_libvirt_volume.go` 20-77) and cloud-init disk
  (`resource_libvirt_cloud_init.go` 18-42): every attribute ForceNew, no Update.

The VM lab's engine decides with this table (and pulumi-command's one rule), and a test holds
the program to it: no input the program sets may be one the provider ignores, unless
`replace_on_changes` names it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

Kind = Literal["replace", "update", "ignored"]

COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
LOCAL_COMMAND = "command:local:Command"
DOMAIN = "libvirt:index/domain:Domain"
NETWORK = "libvirt:index/network:Network"
VOLUME = "libvirt:index/volume:Volume"
CLOUDINIT = "libvirt:index/cloudInitDisk:CloudInitDisk"

# Paths: `a.b` a field of the block `a`, `a[].b` a field of each item of the list `a`; `a#`
# the number of items (ForceNew when the block is). A path not listed is ignored.
SCHEMA: dict[str, dict[str, Kind]] = {
    DOMAIN: {
        **dict.fromkeys(
            [
                "name",
                "description",
                "vcpu",
                "memory",
                "firmware",
                "type",
                "coreosIgnition",
                "fwCfgName",
                "cmdlines",
                "nvram#",
                "nvram.file",
                "nvram.template",
                "filesystems#",
                "disks#",
                "disks[].scsi",
                "graphics#",
                "graphics.type",
                "graphics.autoport",
                "graphics.listenType",
                "graphics.listenAddress",
                "consoles[].type",
                "consoles[].sourcePath",
                "consoles[].sourceHost",
                "consoles[].sourceService",
                "consoles[].targetPort",
                "consoles[].targetType",
                "cpu#",
                "tpm.model",
                "tpm.backendType",
                "tpm.backendDevicePath",
                "tpm.backendEncryptionSecret",
                "tpm.backendVersion",
                "tpm.backendPersistentState",
                "xml.xslt",
            ],
            "replace",
        ),
        "cloudinit": "update",
        "autostart": "update",
        # ignored, among others: disks[].volumeId/file/url/blockDevice, networkInterfaces[].*,
        # cpu.mode, running, kernel, initrd, machine, arch, emulator, qemuAgent, video, bootDevices
    },
    NETWORK: {
        **dict.fromkeys(
            [
                "name",
                "domain",
                "mode",
                "bridge",
                "addresses",
                "dhcp#",
                "dhcp.enabled",
                "routes[].cidr",
                "routes[].gateway",
                "xml.xslt",
                "dns.forwarders[].address",
                "dns.forwarders[].domain",
                "dns.srvs[].service",
                "dns.srvs[].protocol",
                "dns.srvs[].domain",
                "dns.srvs[].target",
                "dns.srvs[].port",
                "dns.srvs[].weight",
                "dns.srvs[].priority",
            ],
            "replace",
        ),
        "autostart": "update",
        "dns.hosts": "update",
        # ignored: mtu, dns.enabled, dns.localOnly, dnsmasqOptions
    },
}
ALL_FORCE_NEW = {VOLUME, CLOUDINIT}
# pulumi-command v1.2.1 applies every change in place (Update runs `create` again, under the same
# ID: commandController.go); its SDK registers each Command with replace_on_changes=["triggers[*]"].
# So is a CopyToRemote's (copyController.go Update: it copies again when the source's hash or the
# remote path changed), whose SDK does the same; and a local Command's, as a remote one's.
ALL_IN_PLACE = {COMMAND, COPY, LOCAL_COMMAND}
# The types the engine diffs field by field (the table, or every field in place); any change to
# another type (a volume, a cloud-init disk, a generated key) replaces it.
PLANNED = ALL_IN_PLACE | set(SCHEMA)


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every field in an input, lists as `a[]`; a block's count as `a#` (a
    block of at most one item, which Pulumi gives as an object, counts 1)."""
    if isinstance(value, dict):
        if path:
            yield f"{path}#", 1
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        yield f"{path}#", len(value)
        for i, v in enumerate(value):
            for p, leaf in leaves(v, f"{path}[]"):
                yield p.replace(f"{path}[]", f"{path}[{i}]", 1), leaf
    else:
        yield path, value


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def kind(typ: str, path: str) -> Kind:
    """What the provider does when the field at `path` (items numbered or not) changes."""
    if typ in ALL_FORCE_NEW:
        return "replace"
    if typ in ALL_IN_PLACE:
        return "update"
    table = SCHEMA.get(typ, {})
    generic = _generic(path)
    while generic:  # the field, then each block above it (a block given whole: cmdlines)
        if generic in table:
            return table[generic]
        if generic.endswith("#"):
            generic = generic[:-1]
        elif generic.endswith("[]"):
            generic = generic[:-2]
        else:
            generic = generic.rpartition(".")[0]
    return "ignored"


def changed(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """The paths whose value differs between two sets of inputs (a list's items by position)."""
    a, b = dict(leaves(old)), dict(leaves(new))
    return {p for p in set(a) | set(b) if a.get(p) != b.get(p)}


def replaced_on(path: str, replace_on_changes: list[str]) -> bool:
    """The engine's replaceOnChanges match (PropertyPath.Contains): `*`, the path itself, or any
    block above it; `[*]` and `[N]` in either stand for any item."""
    top = _generic(path).replace("[]", "").replace("#", "")
    return any(
        r == "*" or top == (want := re.sub(r"\[(\*|\d+)\]", "", r)) or top.startswith(f"{want}.")
        for r in replace_on_changes
    )


def plan(typ: str, old: dict[str, Any], new: dict[str, Any], replace_on_changes: list[str]) -> str:
    """same, update or replace, as the engine would plan it (the provider's diff, then the
    resource's replaceOnChanges)."""
    diff = changed(old, new)
    if not diff:
        return "same"
    if any(kind(typ, p) == "replace" or replaced_on(p, replace_on_changes) for p in diff):
        return "replace"
    return "update"


def ignored(typ: str, old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """The changed paths an update would leave as they were on the hypervisor."""
    return {p for p in changed(old, new) if kind(typ, p) == "ignored"}
