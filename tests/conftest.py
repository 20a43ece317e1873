import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from halab import config  # noqa: E402

# verify's rows per stack, every one asserted by the lab tests (README, "What verify proves")
VERIFY_ROWS = {"dev": 29, "lab3": 48}

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


def require_lab(missing: list[str]) -> None:
    """A lab test's prerequisites: a skip naming what is missing, or a failure where the labs
    must run (HALAB_REQUIRE_LABS=1: CI, which installs everything, must never skip a lab)."""
    if not missing:
        return
    why = "this host lacks: " + "; ".join(missing)
    if os.environ.get("HALAB_REQUIRE_LABS") == "1":
        pytest.fail(f"HALAB_REQUIRE_LABS=1 and {why}")
    pytest.skip(why)


def engine_config(raw: dict, **secrets: str) -> tuple[dict[str, str], list[str]]:
    """A stack file's keys as the engine hands them to a program (halab/config.py: engine_form)."""
    return config.engine_form(raw, secrets)


def cli_config(cfg: dict[str, str], secret_keys: list[str]) -> str:
    """The same config as `pulumi config --json --show-secrets` prints it."""
    return json.dumps({k: {"value": v, "secret": k in secret_keys} for k, v in cfg.items()})
