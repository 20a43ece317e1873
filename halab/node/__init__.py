"""Everything shipped to a node, in one tree: the step scripts (`steps/`, with `lib.sh` and
`paths.sh`, where every node path is declared once), the files installed as they are, node
paths filled in (`files/`: node scripts, systemd units and drop-ins), and the templates the
core renders (`templates/`). Python reads them from here (`paths.py`: the node paths)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = HERE / "steps"
FILES = HERE / "files"
TEMPLATES = HERE / "templates"
