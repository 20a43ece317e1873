"""The guest image the VM lab gives the program through `halab:image`: Debian 13 (trixie, the
release of the program's default image) built from Debian packages (halab/drivers/vmlab/build-image),
cached under /var/cache/halab keyed by a hash of its recipe (the build script, the suite and the
package list), so a changed recipe builds a new image and an unchanged one is built once."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from halab.core.roles import backend, load_balancer

BUILD_SCRIPT = Path(__file__).resolve().parent / "build-image"
CACHE = Path("/var/cache/halab/images")
SIZE_GIB = 3  # the image's own disk; each VM's root volume is vm.diskGiB on top of it
SUITE, RELEASE = "trixie", 13  # config.DEBIAN_13_IMAGE's release and packages, built here
# What a cloud image has, then everything the steps install: no guest needs a mirror, and the
# `packages` step finds every package present.
BASE_PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "linux-image-cloud-amd64",
    "cloud-init",
    "cloud-guest-utils",  # growpart: cloud-init grows the root partition to the VM's disk
    "e2fsprogs",  # resize2fs: then its filesystem (minbase has neither)
    "netplan.io",
    "openssh-server",
    "sudo",
    "procps",
    "python3",
)
# mmdebstrap, mkfs, sfdisk, extlinux and qemu-img: what the build needs on the host.
HOST_COMMANDS = ("mmdebstrap", "mkfs.ext4", "sfdisk", "losetup", "extlinux", "qemu-img", "unshare")


def packages() -> tuple[str, ...]:
    return tuple(dict.fromkeys(BASE_PACKAGES + load_balancer.PACKAGES + backend.PACKAGES))


def recipe_hash() -> str:
    h = hashlib.sha256(BUILD_SCRIPT.read_bytes())
    h.update("\n".join(packages()).encode())
    h.update(f"{SIZE_GIB} {SUITE}".encode())
    return h.hexdigest()[:16]


def path() -> Path:
    return CACHE / f"debian{RELEASE}-{recipe_hash()}.qcow2"


def checksum() -> str | None:
    """The cached image's `sha512:HEX`, as `halab:imageChecksum` gives it (the program then
    fetches and checks the image as it would a download: components/image.py), kept beside the
    image once computed; None before the image is built."""
    out = path()
    if not out.exists():
        return None
    recorded = out.with_suffix(".sha512")
    if not recorded.exists():
        h = hashlib.sha512()
        with out.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        recorded.write_text(f"sha512:{h.hexdigest()}\n")
    return recorded.read_text().strip()


def ensure(log: Callable[[str], None] = print) -> Path:
    """The cached image, built first when this recipe has none (a few minutes, once)."""
    out = path()
    if out.exists():
        log(f"image: {out} (cached)")
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"image: building {out.name} with mmdebstrap ({len(packages())} packages)...")
    p = subprocess.run(
        [str(BUILD_SCRIPT), str(out), str(SIZE_GIB), SUITE, *packages()],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    if p.returncode != 0 or not out.exists():
        raise RuntimeError(f"building the guest image failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    log(p.stdout.strip().splitlines()[-1])
    return out
