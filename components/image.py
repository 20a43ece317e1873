"""The guest image every VM's root disk layers on: one base volume per hypervisor. With a
checksum (the default image's, or `halab:imageChecksum`), a local Command first fetches the
image into the user's cache and checks it (fetch-image.sh), and the volumes are made from that
file: terraform-provider-libvirt v0.8.1 downloads a volume's URL source and checks nothing.
Without one (the user's own file, an absolute path), the volumes are made from the file as is."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pulumi
import pulumi_command.local as local
import pulumi_libvirt as libvirt

from components.cache import user_cache
from halab.core.model import Lab

FETCH_SCRIPT = Path(__file__).with_name("fetch-image.sh")


def _made_of(lab: Lab) -> str:
    """The image's identity: its checksum, else its path."""
    return hashlib.sha256((lab.libvirt.image_checksum or lab.libvirt.image).encode()).hexdigest()[:8]


def base_volume_name(lab: Lab) -> str:
    """Named by the image it holds: another image is another volume (a new ID), never new
    content under an ID the root volumes already point at."""
    return f"{lab.network.name}-base-{_made_of(lab)}.qcow2"


def cached_image(checksum: str) -> Path:
    algo, _, digest = checksum.partition(":")
    return user_cache() / "images" / f"{algo}-{digest[:32]}.img"


def base_volumes(
    parent: pulumi.Resource, name: str, lab: Lab, on: Callable[[str], pulumi.ResourceOptions]
) -> dict[str, libvirt.Volume]:
    """By hypervisor name, the base volume made through that hypervisor's provider (`on`)."""
    source, after = lab.libvirt.image, []
    if lab.libvirt.image_checksum:
        cached = cached_image(lab.libvirt.image_checksum)
        fetch = local.Command(
            f"{name}-image-fetch",
            create=FETCH_SCRIPT.read_text(),
            interpreter=["/bin/bash", "-c"],
            environment={
                "HALAB_IMAGE": lab.libvirt.image,
                "HALAB_CHECKSUM": lab.libvirt.image_checksum,
                "HALAB_CACHED": str(cached),
            },
            # again for another image, and for a new hypervisor, whose volume reads the file
            triggers=[lab.libvirt.image, lab.libvirt.image_checksum, *(hv.name for hv in lab.libvirt.hypervisors)],
            opts=pulumi.ResourceOptions(parent=parent),
        )
        source, after = str(cached), [fetch]
    # The checked file's path is in the user's cache: another user's `up` (or another machine's)
    # names another path, and a new `source` would replace the volume (ForceNew), then every
    # guest on it. Ignored: the engine then keeps the old path for an update and a replacement
    # alike (step_generator.go 1264-1268, processIgnoreChanges, v3.259.0), so the resource's name
    # holds the image's identity: another image is another resource, never old bytes under it.
    keep = pulumi.ResourceOptions(depends_on=after, ignore_changes=["source"])
    return {
        hv.name: libvirt.Volume(
            f"{name}-base-image-{_made_of(lab)}-{hv.name}",
            name=base_volume_name(lab),
            pool=lab.libvirt.pool,
            source=source,
            format="qcow2",
            opts=pulumi.ResourceOptions.merge(on(hv.name), keep),
        )
        for hv in lab.libvirt.hypervisors
    }
