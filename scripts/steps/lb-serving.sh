#!/usr/bin/env bash
# The last step of an `up`, on each load balancer once every backend is configured: it returns
# when this haproxy calls every server of every service's pool UP, so a first request through
# the VIP is served. A fresh haproxy starts each server DOWN until its checks pass (rise x
# inter): without this wait, `up` ended before the lab served (the first curl: empty reply).
# Bounded by the model (serving.conf); on timeout it names each server not UP and its state.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
conf=$(staged /etc/halab/serving.conf)
# shellcheck source=/dev/null
. "$conf"
if ! [[ "${SERVING_WITHIN:-}" =~ ^[0-9]+$ ]] || [ -z "${SERVING_SERVERS:-}" ]; then
  die "staged serving.conf sets no SERVING_WITHIN or SERVING_SERVERS"
fi
[ -S /run/haproxy/admin.sock ] || die "haproxy is not running (no /run/haproxy/admin.sock)"

# The servers of SERVING_SERVERS (backend/server) not UP, with haproxy's word for each.
not_up() {
  python3 - "$SERVING_SERVERS" <<'PY'
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(2)
    s.connect("/run/haproxy/admin.sock")
    s.sendall(b"show stat -1 4 -1\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
lines = data.decode(errors="replace").splitlines()
head = lines[0].lstrip("# ").split(",")
rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line]
# haproxy 2.6 calls a server UP until its first check (check_status INI): not yet a sign
status = {
    f"{r['pxname']}/{r['svname']}": r["status"] if r["check_status"].lstrip("* ") not in ("", "INI") else "unchecked"
    for r in rows
}
bad = [f"{s} {status.get(s, 'absent')}" for s in sys.argv[1].split() if not status.get(s, "").startswith("UP")]
print(", ".join(bad))
PY
}

all_up() { [ -z "$(not_up)" ]; }
if ! wait_until "$SERVING_WITHIN" all_up; then
  die "not serving after ${SERVING_WITHIN}s: not UP: $(not_up)"
fi
log "serving: every server UP ($(wc -w <<<"$SERVING_SERVERS") in the pools)"
