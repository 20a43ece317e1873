"""Where the program keeps files on the machine running pulumi: the user's cache."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache() -> Path:
    """`$XDG_CACHE_HOME/halab`, else `~/.cache/halab`: the user's own, not /tmp, where another
    user could plant a file under a name the program will read."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "halab"
