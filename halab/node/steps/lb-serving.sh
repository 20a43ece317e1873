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
conf=$(staged "$SERVING_CONF")
# shellcheck source=/dev/null
. "$conf"
if ! [[ "${SERVING_WITHIN:-}" =~ ^[0-9]+$ ]] || [ -z "${SERVING_SERVERS:-}" ]; then
  die "staged serving.conf sets no SERVING_WITHIN or SERVING_SERVERS"
fi
[ -S "$HAPROXY_ADMIN_SOCK" ] || die "haproxy is not running (no $HAPROXY_ADMIN_SOCK)"

# ecmp mode: the router sends this node flows once bgpd has announced the VIP to it, with BFD up
bgp_wait() {
  [ -n "${SERVING_BGP_PEER:-}" ] || return 0
  local start=$SECONDS
  wait_until "$SERVING_WITHIN" bgp_announced "$SERVING_BGP_PEER" "$SERVING_VIP" "$SERVING_BFD" \
    || die "the VIP $SERVING_VIP is not announced to $SERVING_BGP_PEER after ${SERVING_WITHIN}s (session, BFD, or the watcher's verdict: $(cat "$WATCH_HEALTH" "$WATCH_SERVING" 2>/dev/null | tr '\n' ' '))"
  log "announcing $SERVING_VIP to $SERVING_BGP_PEER ($((SECONDS - start)) s)"
}

ctl=$(staged "$HAPROXY_CTL_BIN")
read -r -a servers <<<"$SERVING_SERVERS"
# halab-haproxy-ctl: a server UP before its first check is not UP; unreadable stats never pass
if wait_until "$SERVING_WITHIN" python3 "$ctl" up "${servers[@]}" >/dev/null; then
  log "serving: every server UP (${#servers[@]} in the pools)"
  bgp_wait
  exit 0
fi
status=0
out=$(python3 "$ctl" serving "${servers[@]}" 2>&1) || status=$?
not_up=$(head -n 1 <<<"$out") none=$(sed -n 2p <<<"$out")
[ -z "$none" ] || die "not serving after ${SERVING_WITHIN}s: no server UP in $none; not UP: $not_up"
[ "$status" -eq 0 ] || die "not serving after ${SERVING_WITHIN}s: $out"
echo "[$HALAB_STEP] warning: serving, but after ${SERVING_WITHIN}s not UP: $not_up" >&2
bgp_wait
