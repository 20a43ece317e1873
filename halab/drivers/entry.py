"""What the command-line scripts share before they import the project's packages."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def use_project_venv(root: Path) -> None:
    """Re-runs the current script with the project's .venv, whose packages are the pinned ones,
    when another Python runs it (e.g. `sudo scripts/bench` runs the system Python, which may
    have some of the packages and not others)."""
    venv = root / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), *sys.argv])


def stack_problem(path: str, error: Exception) -> str:
    """What a script prints, and exits 2 on, for a stack file it cannot use: the file named
    once. An unreadable or unparsable file is one line that says where (StackFileError); a
    config's problems follow the file's name, one per line."""
    from halab.core.stackfile import StackFileError

    return str(error) if isinstance(error, StackFileError) else f"{path}: {error}"
