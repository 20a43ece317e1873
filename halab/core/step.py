"""A step, and the bundle that carries it to a node: a script of `halab/node/steps/` plus the
rendered files it installs, packed by `Step.bundle()` into one bash program run as root on the
node: over SSH by the Pulumi driver (`sudo bash -s`), inside a namespace-lab node by the lab.
The same bytes either way, so every driver runs the same logic. A node's first step installs
its library (lib.sh, its step scripts, the static node files); every later bundle takes its
code from there, checked by hash, and carries only the files rendered for it, in plain text.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import shlex
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from halab.core import render
from halab.node import STEPS as STEPS_DIR
from halab.node.paths import DECLARATION, PATHS

# The node's library (halab/node/steps/library.sh): lib.sh, the node's step scripts and the static
# files of halab/node/files/ they install, put in place by the node's first step, `library`. Every
# later step's bundle names each such file by its sha256 and copies it from there instead of
# carrying it: they travel once per node, not in every step (the Pulumi state holds each bundle
# twice, as an input and as an output), and what a step still carries is what was rendered for it.
LIBRARY_DIR = PATHS["LIBRARY_DIR"]
# A path the bundle writes inside double quotes: nothing the shell would expand or split.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")
HEREDOC_END = "HALAB_EOF"
LIBRARY_STEP = "library"  # the name of each node's first step (library_step)


@dataclass(frozen=True)
class Step:
    host: str
    name: str
    script: str  # a file of halab/node/steps/
    args: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (absolute path on the node, content)
    secret: bool = False  # a file holds a secret: the driver must keep the bundle secret
    # The node's library is in place (its `library` step runs first): lib.sh, the step's script
    # and the static node files come from it, by hash (it keeps every version). False for a
    # bundle that must run on a node that may have no library (a drill, a test's step): it
    # carries them, packed.
    library: bool = False

    def bundle(self) -> str:
        return self._bundle

    def digest(self) -> str:
        return hashlib.sha256(self._bundle.encode()).hexdigest()

    @cached_property
    def _bundle(self) -> str:
        """Built once per step: the Pulumi program asks each step for its bundle and its digest,
        a thousand steps at 100 backends.

        What was rendered for this step is written in plain text (`_staged`), so a diff of the
        bundle (`pulumi preview --diff`) shows the lines of a rendered file that changed. The code
        (lib.sh, the step's script, the static node files: reviewed in the repository) comes from
        the node's library, each file named with its sha256, so a new version changes the bundle
        (its digest, the step's trigger) of every step that uses it, and they run again. Without
        the library, the code travels gzip-compressed in the bundle (`_pack`)."""
        staged = [
            ("lib.sh", (STEPS_DIR / "lib.sh").read_text()),
            ("paths.sh", DECLARATION.read_text()),
            ("step.sh", (STEPS_DIR / self.script).read_text()),
        ] + [("root" + path, content) for path, content in self.files]
        code = _library_names()
        parents = sorted({posixpath.dirname(rel) for rel, _ in staged} - {""})
        head = ["mkdir -p " + " ".join(f'"$HALAB_STAGE/{p}"' for p in parents)] if parents else []
        packed: list[str] = []
        rest: list[str] = []
        first: dict[str, str] = {}  # content -> where this bundle staged it first
        for rel, content in staged:
            if not _SAFE_PATH.fullmatch(rel):
                raise ValueError(f"{self.host}/{self.name}: unsafe path {rel!r}")
            if content in first:
                rest.append(f'cp "$HALAB_STAGE/{first[content]}" "$HALAB_STAGE/{rel}"')
            elif content in code and self.library:
                rest.append(f"halab_library {code[content]} {_sha256(content)} {rel}")
            elif content in code:
                packed.append(_staged(rel, content))
            else:
                rest.append(_staged(rel, content))
            first.setdefault(content, rel)
        if packed:  # the same lines, run by a bash of their own once unpacked
            head += [f"base64 -d <<'{HEREDOC_END}' | gzip -dc | bash", _pack("\n".join(packed)), HEREDOC_END]
        if self.library:
            head.append(_FROM_LIBRARY)
        what = f"halab/node/steps/{self.script} and the files it installs"
        return "\n".join(
            [
                "#!/usr/bin/env bash",
                f"# ha-lb-lab step {self.name!r} for {self.host}: {what}.",
                "set -euo pipefail",
                'HALAB_STAGE=$(mktemp -d "${TMPDIR:-/tmp}/halab-step.XXXXXX")',
                f"export HALAB_STAGE HALAB_STEP={shlex.quote(self.host + '/' + self.name)}",
                "trap 'rm -rf \"$HALAB_STAGE\"' EXIT",
                *head,
                *rest,
                " ".join(["bash", '"$HALAB_STAGE/step.sh"', *map(shlex.quote, self.args)]),
                "",
            ]
        )


# A file of the node's library into the stage, by the sha256 it was built with (the library keeps
# every version), and refused unless it is that very file: a step never runs another lib.sh,
# script or node file than its digest says.
_FROM_LIBRARY = f"""halab_library() {{ # NAME SHA256 STAGED
  cp "{LIBRARY_DIR}/sha256/$2" "$HALAB_STAGE/$3" 2>/dev/null && [ "$(sha256sum <"$HALAB_STAGE/$3")" = "$2  -" ] || {{
    echo "[$HALAB_STEP] error: the library on this node does not hold this version of $1 \
({LIBRARY_DIR}/sha256/$2): the library step must run first; nothing was changed" >&2
    exit 1
  }}
}}"""


@lru_cache(maxsize=1)
def _library_names() -> dict[str, str]:
    """What a node's library can hold, by content: every file of halab/node/steps/ (paths.sh
    among them) and of halab/node/files/ as rendered, node paths filled in (their names are
    unique across both). Read once per process: a file changed on disk since is not found here,
    and a bundle then carries it itself, which is still right."""
    steps = sorted(STEPS_DIR.glob("*.sh"))
    files = sorted(p for p in render.NODE_FILES.iterdir() if p.is_file())
    names = [p.name for p in steps + files]
    if len(set(names)) != len(names):
        raise ValueError(f"a name in both halab/node/steps/ and halab/node/files/: {sorted(names)}")
    return {p.read_text(): p.name for p in steps} | {render.node_file(p.name): p.name for p in files}


@lru_cache(maxsize=16)
def _pack(lines: str) -> str:
    """Shell lines, gzip-compressed and base64-encoded on one line (base64's alphabet has no `_`:
    never a heredoc's delimiter). Cached: every backend's library is the same. The same bytes on
    every run, so the bundle's digest moves only with its content: the gzip header is written
    here (no time, no OS: Python's own differs between versions), the deflate data by zlib."""
    data = f"set -euo pipefail\n{lines}\n".encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return base64.b64encode(_GZIP_HEADER + body + trailer).decode()


# gzip (RFC 1952): deflate, no flags, no time, maximum compression, OS unknown
_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 2, 255])


@lru_cache(maxsize=512)
def _sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


@lru_cache(maxsize=256)
def _staged(rel: str, content: str) -> str:
    """The lines that write one file into the stage, byte for byte. Cached by content: every
    node's bundles carry the same files.

    Text goes in a quoted heredoc, which bash copies as is (no expansion), ended by a delimiter
    no line of the content equals (HALAB_EOF, or HALAB_EOF_1, ...). A heredoc ends its last line
    with a newline: a file without one loses that byte again (`truncate`). A NUL byte, which
    bash cannot read in a script, goes base64-encoded (its alphabet has no `_`: no delimiter)."""
    dst = f'"$HALAB_STAGE/{rel}"'
    if content == "":
        return f": >{dst}"
    if "\0" in content:
        return f"base64 -d >{dst} <<'{HEREDOC_END}'\n{base64.encodebytes(content.encode()).decode()}{HEREDOC_END}"
    lines, end, n = set(content.split("\n")), HEREDOC_END, 0
    while end in lines:
        n += 1
        end = f"{HEREDOC_END}_{n}"
    if content.endswith("\n"):
        return f"cat >{dst} <<'{end}'\n{content}{end}"
    return f"cat >{dst} <<'{end}'\n{content}\n{end}\ntruncate -s -1 {dst}"


def library_step(host: str, steps: Sequence[Step], directory: str = LIBRARY_DIR) -> Step:
    """The node's `library` step (halab/node/steps/library.sh): lib.sh and every script and static
    node file `steps` take from the library. It carries them itself, packed (the node has no
    library yet). `directory`: another place than the one the bundles read, for a test on this
    host."""
    names, lib = _library_names(), (STEPS_DIR / "lib.sh").read_text()
    used = {
        names[c]: c
        for s in steps
        if s.library
        for c in (lib, DECLARATION.read_text(), (STEPS_DIR / s.script).read_text(), *dict(s.files).values())
        if c in names
    }
    files = tuple((f"{directory}/{n}", used[n]) for n in sorted(used))
    return Step(host, LIBRARY_STEP, "library.sh", (directory,), files)
