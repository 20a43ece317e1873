"""What the command-line scripts share before they import the project's packages."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def use_project_venv(root: Path) -> None:
    """Re-runs the current script with the project's .venv when this Python lacks its packages
    (e.g. `sudo scripts/netns-lab` runs the system Python)."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        venv = root / ".venv" / "bin" / "python"
        if venv.exists() and Path(sys.executable) != venv:
            os.execv(venv, [str(venv), *sys.argv])
        raise
