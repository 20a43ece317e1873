"""components/fetch-image.sh, as the image-fetch local Command runs it: the image is used only
once its bytes match its checksum, and nothing is left behind when they do not. Local files
only (curl reads a file:// URL as it would an https:// one): no network. Under a second."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "components" / "fetch-image.sh"


def fetch(image: str, checksum: str, cached: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HALAB_IMAGE": image, "HALAB_CHECKSUM": checksum, "HALAB_CACHED": str(cached)}
    return subprocess.run(["bash", "-c", SCRIPT.read_text()], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "src" / "debian.qcow2"
    p.parent.mkdir()
    p.write_bytes(b"QFI\xfb" + os.urandom(4096))
    return p


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
@pytest.mark.parametrize("how", ["path", "url"])
def test_a_matching_image_is_cached_and_used(image, tmp_path, algo, how):
    cached = tmp_path / "cache" / "images" / "x.img"
    digest = hashlib.new(algo, image.read_bytes()).hexdigest()
    p = fetch(str(image) if how == "path" else f"file://{image}", f"{algo}:{digest}", cached)
    assert p.returncode == 0, p.stderr
    assert cached.read_bytes() == image.read_bytes() and cached.stat().st_mode & 0o777 == 0o644
    assert f"({algo} checked)" in p.stdout
    image.unlink()  # checked again, not trusted, and used without fetching again
    assert fetch(str(image), f"{algo}:{digest}", cached).returncode == 0


def test_an_image_that_does_not_match_is_not_used_and_nothing_is_left(image, tmp_path):
    cached = tmp_path / "cache" / "x.img"
    want = "0" * 128
    p = fetch(str(image), f"sha512:{want}", cached)
    got = hashlib.sha512(image.read_bytes()).hexdigest()
    assert p.returncode == 1 and f"has sha512 {got}, not {want} (halab:imageChecksum)" in p.stderr, p
    assert list(cached.parent.iterdir()) == []  # no cached file, no partial download


def test_a_cached_file_that_no_longer_matches_is_fetched_again(image, tmp_path):
    cached = tmp_path / "x.img"
    cached.write_bytes(b"truncated")
    p = fetch(str(image), "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest(), cached)
    assert p.returncode == 0 and cached.read_bytes() == image.read_bytes(), p


def test_an_image_that_cannot_be_fetched_is_named(tmp_path):
    p = fetch(f"file://{tmp_path}/missing.qcow2", "sha256:" + "0" * 64, tmp_path / "c" / "x.img")
    assert p.returncode == 1 and f"could not fetch file://{tmp_path}/missing.qcow2 (halab:image)" in p.stderr, p
    assert list((tmp_path / "c").iterdir()) == []
