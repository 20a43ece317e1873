#!/usr/bin/env bash
# Faults and probes for the verifier's drills, run on one node from a bundle like any step
# (namespace-lab node or VM alike). Touches only this node.
#   drill.sh kill NAME             SIGKILL every process of NAME here, each frozen first (a crash
#                                  that stays down: no process of it acts on the others' death)
#   drill.sh stop|start NAME       a clean stop, or start (as the steps start it)
#   drill.sh hang|resume NAME      SIGSTOP every process of NAME here (a hang: its sockets stay
#                                  open and the kernel still accepts connections for it), or
#                                  SIGCONT them
#   drill.sh link-down IFACE DELAY FOR [GW]
#                                  cut the node's link DELAY seconds from now, for FOR seconds at
#                                  most: this call returns before the cut (over SSH, the node may
#                                  be reachable through that link only) and the node restores
#                                  the link by itself when FOR runs out
#   drill.sh link-up IFACE [GW]    restore it now (and the default route via GW if it went with
#                                  it); cancels the pending restore
#   drill.sh vrrp-stats            keepalived's counters (its stats file)
# kill, stop and hang print "fault at EPOCH" (this node's clock, just before the signal), and
# link-down when its DELAY starts: the verifier's clock starts when the fault takes effect, not
# when it asked for it.
#   drill.sh haproxy-api CMD...    a command to this node's haproxy runtime API (show stat, ...)
#   drill.sh second-chance off|on  ecmp mode: this load balancer's copies to its peers left out
#                                  of its packet path, or put back (halab-tproxy)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root


# systemd restarts a crashed haproxy within 100 ms (Restart=always) and keepalived within 1 s:
# a drill's crash must stay down until the drill restores it. Its hold file does that: the
# installed drop-ins start neither while $HOLD_DIR/NAME exists (ExecCondition, which systemd
# runs for a restart too; a unit Condition= is not checked then), and `start` removes it
# (service_converge, lib.sh).

link_up() {
  ip link set "$1" up
  if [ -n "${2:-}" ] && [ -z "$(ip -4 route show default)" ]; then
    wait_until 5 ip -4 route replace default via "$2" dev "$1"
  fi
}

fault_at() { log "fault at $EPOCHREALTIME"; }

# kill freezes every process of the daemon (SIGSTOP) before it kills them: SIGKILLed one after the
# other, keepalived's VRRP process outlives its parent by a moment, gets SIGTERM from the
# kernel when the parent dies (keepalived's children ask for it, PR_SET_PDEATHSIG), and sends
# its priority-0 advert: a clean stop, in 3 to 7 trials of 10 per profile in the benchmark. A frozen
# process acts on no signal but SIGKILL.

action=${1:?action}
case "$action" in
  kill)
    name=${2:?name}
    if has_systemd && systemctl is-active --quiet "$name"; then
      hold=$HOLD_DIR/$name
      [[ "$(systemctl show -p ExecCondition --value "$name")" == *"$hold"* ]] \
        || die "kill $name: its unit has no hold ($hold in an ExecCondition): systemd would restart it"
      mkdir -p "$HOLD_DIR"
      : >"$hold"
      fault_at
      systemctl kill --signal=STOP "$name"
      systemctl kill --signal=KILL "$name"
      wait_until 5 bash -c "! systemctl is-active --quiet '$name'" || die "$name survived SIGKILL"
    else
      fault_at
      pkill -STOP -x "$name" || true
      pkill -KILL -x "$name" || true
      wait_until 5 bash -c "! pgrep -x '$name' >/dev/null" || die "$name survived SIGKILL"
    fi
    ;;
  stop)
    fault_at
    service_stop "${2:?name}"
    ;;
  hang | resume)
    name=${2:?name}
    signal=STOP state=T
    [ "$action" = resume ] && signal=CONT state='[^T]'
    pgrep -x "$name" >/dev/null || die "no $name process here"
    [ "$action" = resume ] || fault_at
    # every process of the name in this node (a VM, or a lab node's own PID namespace); systemd
    # does not restart a stopped process, so VMs and lab nodes take the same path
    pkill "-$signal" -x "$name"
    # shellcheck disable=SC2016
    wait_until 5 bash -c '! ps -C "$1" -o stat= | grep -qv "^$2"' _ "$name" "$state" \
      || die "$action $name: not every process took SIG$signal: $(ps -C "$name" -o pid=,stat= | tr '\n' ' ')"
    ;;
  start)
    service_converge "${2:?name}" no no
    ;;
  link-down)
    iface=${2:?iface} delay=${3:?delay} for=${4:?seconds}
    ip link show "$iface" >/dev/null || die "no interface $iface"
    # its own session, output detached: the SSH session that started it can end at once; the
    # cut comes DELAY seconds after the fault's timestamp
    fault_at
    setsid bash -c "echo \$\$ >$DRILL_LINK_PIDFILE; sleep $delay; ip link set '$iface' down; sleep $for
      $(declare -f wait_until link_up); link_up '$iface' '${5:-}'; rm -f $DRILL_LINK_PIDFILE" \
      </dev/null >/dev/null 2>&1 &
    ;;
  link-up)
    if pid_alive "$DRILL_LINK_PIDFILE"; then
      kill -- "-$(head -n 1 "$DRILL_LINK_PIDFILE")" 2>/dev/null || true
    fi
    rm -f "$DRILL_LINK_PIDFILE"
    link_up "${2:?iface}" "${3:-}"
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
    python3 - "$HAPROXY_ADMIN_SOCK" "${@:2}" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((" ".join(sys.argv[2:]) + "\n").encode())
while chunk := s.recv(65536):
    sys.stdout.write(chunk.decode(errors="replace"))
PY
    ;;
  second-chance)
    case "${2:?off or on}" in
      off) HALAB_SECOND_CHANCE=off "$TPROXY_BIN" apply ;;
      on) "$TPROXY_BIN" apply ;;
      *) die "second-chance: off or on, not $2" ;;
    esac
    ;;
  *) die "unknown drill action: $action" ;;
esac
