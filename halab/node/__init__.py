"""Everything shipped to a node, in one tree: the step scripts (`steps/`, with `lib.sh`), the
files installed as they are (`files/`: node scripts, systemd units and drop-ins) and the
templates the core renders (`templates/`). Python reads them from here; nothing here imports."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = HERE / "steps"
FILES = HERE / "files"
TEMPLATES = HERE / "templates"
