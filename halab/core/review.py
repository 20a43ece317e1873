"""Writes a lab's rendered files to a directory tree, one folder per host, for review."""

from __future__ import annotations

from pathlib import Path

from halab.core import plan, render
from halab.core.model import Credentials, Lab
from halab.core.roles import router


def write_tree(lab: Lab, out: Path, creds: Credentials) -> list[Path]:
    """DIR/<host>/<absolute node path> for every installed file, DIR/<host>/cloud-init/*, and
    DIR/<host>/STEPS (the order the steps run in); in ecmp mode, DIR/_router/ as well: what the
    upstream router needs (docs/ecmp.md), the user's router, not a node. Returns the files written."""
    written = []

    def put(path: Path, content: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)

    for host in lab.nodes:
        root = out / host.name
        steps = plan.host_steps(lab, host, creds)
        listing = []
        for i, step in enumerate(steps, 1):
            listing.append(" ".join([f"{i}.", step.name, f"halab/node/steps/{step.script}", *step.args]))
            for path, content in step.files:
                put(root / path.lstrip("/"), content)
        put(root / "STEPS", "\n".join(listing) + "\n")
        for name, content in render.cloud_init(lab, host, lab.ssh.public_key or render.PLACEHOLDER_SSH_KEY).items():
            put(root / "cloud-init" / name, content)
    if lab.mode == "ecmp":
        for step in router.steps(lab, creds):
            for path, content in step.files:
                put(out / "_router" / path.lstrip("/"), content)
    return written
