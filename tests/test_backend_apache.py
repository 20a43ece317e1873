"""The backends' Apache keeps every keep-alive connection through a burst of requests: what the
planned hand-off row's sessions meet when a move's half-second pause releases them together
(docs/handoff.md). The event MPM shuts a child's idle keep-alive connections when none of that
child's workers is idle, and drops the request a keep-alive connection just sent when no worker
takes it at once (event.c, listener_thread); with Debian's 25 workers a child, CI lost one
session of 200 that way (RemoteDisconnected). The rendered site's MPM lines run a real Apache
in a private network namespace; a burst of 300 requests at once, five times over, loses none.
The control, Debian's own mpm_event.conf, loses some to the same burst: the burst is real.
About 10 s."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import STACKS, need_root_and

from halab.core import config, render, stackfile
from halab.node.paths import PATHS

MPM = {
    "ServerLimit", "StartServers", "ThreadLimit", "ThreadsPerChild", "MaxRequestWorkers", "MinSpareThreads",
    "MaxSpareThreads", "MaxConnectionsPerChild", "MaxKeepAliveRequests",
}  # fmt: skip
DEBIAN_MPM = Path(PATHS["APACHE_DIR"]) / "mods-available/mpm_event.conf"  # this host's, as installed
MODULES = Path("/usr/lib/apache2/modules")
CONNECTIONS, ROUNDS = 300, 5  # the hand-off row opens 200 sessions where the drills press hardest

# Every connection's request written at once from one thread (a burst no thread pool smooths),
# then every answer read; a connection that answers EOF or a reset is lost, and opened again.
CLIENT = """
import socket, sys, time
n, rounds, port = map(int, sys.argv[1:4])
REQ = b"GET /page HTTP/1.1\\r\\nHost: t\\r\\nConnection: keep-alive\\r\\n\\r\\n"
def answer(s):
    buf = b""
    while b"\\r\\n\\r\\n" not in buf:
        c = s.recv(65536)
        if not c:
            raise ConnectionError("EOF")
        buf += c
    head, _, body = buf.partition(b"\\r\\n\\r\\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"not the page: {head[:40]!r}")
    length = int(next(h.split(b":")[1] for h in head.split(b"\\r\\n") if h.lower().startswith(b"content-length")))
    while len(body) < length:
        c = s.recv(65536)
        if not c:
            raise ConnectionError("EOF")
        body += c
def opened():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(REQ)
    answer(s)
    return s
socks = [opened() for _ in range(n)]
lost = 0
for _ in range(rounds):
    for s in socks:
        s.sendall(REQ)
    for i, s in enumerate(socks):
        try:
            answer(s)
        except OSError:
            lost += 1
            s.close()
            socks[i] = opened()
    time.sleep(0.5)
print(lost)
"""


def lost_in_burst(mpm_lines: list[str]) -> int:
    """Requests lost by an Apache (event MPM) with these MPM lines to CONNECTIONS keep-alive
    connections that each ask at once, ROUNDS times; in its own network namespace. Its files in
    a directory of their own under /tmp, readable by Apache's unprivileged workers (pytest's
    tmp_path is not)."""
    with tempfile.TemporaryDirectory(prefix="halab-burst-") as where:
        tmp = Path(where)
        tmp.chmod(0o755)
        return _burst(tmp, mpm_lines)


def _burst(tmp_path: Path, mpm_lines: list[str]) -> int:
    root = tmp_path / "www"
    root.mkdir(mode=0o755)
    (root / "page").write_bytes(b"x" * 20000)  # a page a worker takes a moment to send
    (root / "page").chmod(0o644)
    conf = tmp_path / "httpd.conf"
    conf.write_text(
        "\n".join(
            [
                f"ServerRoot {PATHS['APACHE_DIR']}",
                "ServerName burst",
                f"LoadModule mpm_event_module {MODULES}/mod_mpm_event.so",
                f"LoadModule authz_core_module {MODULES}/mod_authz_core.so",
                f"PidFile {tmp_path}/httpd.pid",
                f"ErrorLog {tmp_path}/error.log",
                "User nobody",
                "Group nogroup",
                "Listen 127.0.0.1:8080",
                f"DocumentRoot {root}",
                "KeepAliveTimeout 30",
                *mpm_lines,
            ]
        )
        + "\n"
    )
    (tmp_path / "client.py").write_text(CLIENT)
    script = (
        f"ip link set lo up && apache2 -f {conf} -k start && sleep 1 && "
        f"{sys.executable} {tmp_path}/client.py {CONNECTIONS} {ROUNDS} 8080; "
        f"rc=$?; apache2 -f {conf} -k stop; exit $rc"
    )
    p = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "APACHE_RUN_DIR": str(tmp_path)},
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.split()[-1])


def test_the_backends_apache_keeps_every_keep_alive_connection_through_a_burst():
    need_root_and("apache2", "unshare")
    lab = config.parse(stackfile.load_stack_file(str(STACKS["dev"])))
    site = render.apache_site(lab, lab.backends[0])
    ours = [line for line in site.splitlines() if line.split(" ")[0] in MPM]
    assert {line.split()[0] for line in ours} == MPM, ours
    assert lost_in_burst(ours) == 0
    debian = [line for line in DEBIAN_MPM.read_text().splitlines() if line and not line.startswith("#")]
    assert lost_in_burst(debian) > 0, "the burst did not press Debian's defaults"
