import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STACKS = {
    "dev": ROOT / "Pulumi.dev.yaml",
    "large": ROOT / "tests" / "stacks" / "Pulumi.large.yaml",
    "lab3": ROOT / "tests" / "stacks" / "Pulumi.lab3.yaml",
}


def need_root_and(*commands: str) -> None:
    """Namespace tests need root and the node tools; CI installs them (.ci/run)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.skip(f"missing commands: {', '.join(missing)}")
