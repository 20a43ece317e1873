"""The Debian packages a host needs, by purpose, read from scripts/debian-packages.txt: the one
list that `scripts/setup` installs and `.ci/run` goes through, so a preflight checks exactly
what the set-up installs, and the two cannot drift apart."""

from __future__ import annotations

import subprocess
from pathlib import Path

LIST = Path(__file__).resolve().parents[2] / "scripts" / "debian-packages.txt"


def debian_packages(purpose: str) -> tuple[str, ...]:
    """The packages on the list's `PURPOSE:` line."""
    for line in LIST.read_text().splitlines():
        name, sep, rest = line.partition(":")
        if sep and not name.startswith("#") and name.strip() == purpose:
            return tuple(rest.split())
    raise KeyError(f"{LIST}: no line for {purpose!r}")


def not_installed(packages: tuple[str, ...]) -> list[str]:
    """Those of `packages` that dpkg does not have installed (all of them without dpkg)."""
    try:
        p = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return list(packages)
    installed = {line.split()[0] for line in p.stdout.splitlines() if line.endswith(" installed")}
    return [pkg for pkg in packages if pkg not in installed]
