#!/usr/bin/env bash
# The last step of an `up`, on each load balancer once every backend is configured: it returns
# when this haproxy serves every service, so a first request through the VIP is answered. A
# fresh haproxy calls each server UP until its first check (haproxy 2.6 and 3.0 alike: no
# `init-state` before 3.1), then DOWN until `rise` checks pass: without this wait, `up` ended
# before the lab served (the first curl: an empty reply).
# It waits, bounded by the model (serving.conf), for every pool server UP and checked. Past the
# bound, a service without one server UP fails the step, naming each server and its state; a
# server down in a pool that still serves is a warning (one dead backend does not fail an `up`).
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

# Two lines from haproxy's stats: the servers of SERVING_SERVERS (backend/server) not UP, with
# haproxy's word for each; the backends with no server UP. Exits non-zero when it cannot read
# the stats (no answer, no header): that is never a pass.
probe() {
  python3 - "$SERVING_SERVERS" <<'PY'
import csv, socket, sys
try:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect("/run/haproxy/admin.sock")
        s.sendall(b"show stat -1 4 -1\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
except OSError as e:
    sys.exit(f"haproxy's runtime API: {e}")
text = data.decode(errors="replace")
if not text.startswith("# pxname,"):
    sys.exit(f"haproxy's runtime API answered no stats: {text[:100]!r}")
rows = list(csv.DictReader(text[2:].splitlines()))
# a server UP before its first check (check_status INI) is not yet a sign
status = {
    f"{r['pxname']}/{r['svname']}": r["status"] if r["check_status"].lstrip("* ") not in ("", "INI") else "unchecked"
    for r in rows
}
wanted = sys.argv[1].split()
print(", ".join(f"{s} {status.get(s, 'absent')}" for s in wanted if not status.get(s, "").startswith("UP")))
up = {s.split("/")[0] for s in wanted if status.get(s, "").startswith("UP")}
print(", ".join(sorted({s.split("/")[0] for s in wanted} - up)))
PY
}

all_up() {
  local out
  out=$(probe) || return 1
  [ -z "$(head -n 1 <<<"$out")" ]
}

if wait_until "$SERVING_WITHIN" all_up; then
  log "serving: every server UP ($(wc -w <<<"$SERVING_SERVERS") in the pools)"
  exit 0
fi
out=$(probe 2>&1) || die "not serving after ${SERVING_WITHIN}s: $out"
not_up=$(head -n 1 <<<"$out") none=$(sed -n 2p <<<"$out")
[ -z "$none" ] || die "not serving after ${SERVING_WITHIN}s: no server UP in $none; not UP: $not_up"
echo "[$HALAB_STEP] warning: serving, but after ${SERVING_WITHIN}s not UP: $not_up" >&2
