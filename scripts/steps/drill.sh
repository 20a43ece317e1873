#!/usr/bin/env bash
# Faults and probes for the verifier's drills, run on one node from a bundle like any step
# (namespace-lab node or VM alike). Touches only this node.
#   drill.sh kill NAME             SIGKILL every process named NAME here (a crash)
#   drill.sh stop|start NAME       a clean stop, or start (as the steps start it)
#   drill.sh link-down IFACE       cut the node's link
#   drill.sh link-up IFACE [GW]    restore it, and the default route via GW if it went with it
#   drill.sh vrrp-stats            keepalived's counters (its stats file)
#   drill.sh haproxy-api CMD...    a command to this node's haproxy runtime API (show stat, ...)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

action=${1:?action}
case "$action" in
  kill)
    pkill -KILL -x "${2:?name}" || true
    wait_until 5 bash -c "! pgrep -x '$2' >/dev/null" || die "$2 survived SIGKILL"
    ;;
  stop) service_stop "${2:?name}" ;;
  start) service_converge "${2:?name}" no no ;;
  link-down) ip link set "${2:?iface}" down ;;
  link-up)
    ip link set "${2:?iface}" up
    if [ -n "${3:-}" ] && [ -z "$(ip -4 route show default)" ]; then
      wait_until 5 ip -4 route replace default via "$3" dev "$2"
    fi
    ;;
  vrrp-stats)
    pid_alive "$KEEPALIVED_PIDFILE" || die "keepalived is not running"
    rm -f /tmp/keepalived.stats
    kill -USR2 "$(head -n 1 "$KEEPALIVED_PIDFILE")"
    wait_until 5 test -s /tmp/keepalived.stats || die "keepalived wrote no stats"
    sleep 0.2
    cat /tmp/keepalived.stats
    ;;
  haproxy-api)
    # One command to this node's haproxy runtime API (the admin socket), its answer on stdout.
    python3 - "${@:2}" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/run/haproxy/admin.sock")
s.sendall((" ".join(sys.argv[1:]) + "\n").encode())
while chunk := s.recv(65536):
    sys.stdout.write(chunk.decode(errors="replace"))
PY
    ;;
  *) die "unknown drill action: $action" ;;
esac
