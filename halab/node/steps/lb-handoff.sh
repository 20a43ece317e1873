#!/usr/bin/env bash
# The VIP around this load balancer's replacement or removal (halab/core/rolling.py). Run as a step
# (the gate): keepalived runs here and this haproxy serves every service (a server UP in each
# pool), bounded; the next load balancer is replaced only then. Run with HALAB_ON_DELETE=1 (the
# step's delete, before the guest is deleted): keepalived stops here, so a holder sends a
# priority-0 advert and a peer takes the VIP at once; the step waits, bounded, for a peer to
# answer on the VIP and for the connections in flight through this node to end: the new holder
# sends their packets here meanwhile (the second chance, docs/handoff.md), for at most
# vrrp.handoffDrainSeconds.
# HALAB_GUEST_ID, where the driver knows the guest (its libvirt UUID): a delete on another guest
# at this address (this one was replaced out of band) changes nothing.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd python3 ss ip
# shellcheck source=/dev/null
. "$(staged "$HANDOFF_CONF")"
ctl=$(staged "$HAPROXY_CTL_BIN")
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$ctl" || die "staged halab-haproxy-ctl does not parse"
read -r -a servers <<<"$READY_SERVERS"

holds_vip() {
  ip -o addr show to "$HANDOFF_VIP/32" | grep -q .
}
in_flight() {
  ss -Htn state established src "$HANDOFF_VIP" | wc -l
}
# shellcheck disable=SC2317 # called through wait_until
quiet() {
  [ "$(in_flight)" -eq 0 ]
}

if [ -n "${HALAB_ON_DELETE:-}" ]; then
  uuid=/sys/class/dmi/id/product_uuid
  if [ -n "${HALAB_GUEST_ID:-}" ] && [ -r "$uuid" ] && [ "$(tr '[:upper:]' '[:lower:]' <"$uuid")" != "${HALAB_GUEST_ID,,}" ]; then
    log "this guest is not the one the hand-off was made on (replaced since): nothing to hand off"
    exit 0
  fi
  held=no
  if [ "$HANDOFF_MODE" = ecmp ]; then
    # the watcher first, or it would announce the VIP again; then the VIP on lo, which bgpd
    # announces: the router sends new flows to the peers from its next update on
    service_stop halab-haproxy-watch # under systemd too (the unit writes no pidfile)
    ip -4 addr del "$HANDOFF_VIP/32" dev lo 2>/dev/null || true
    log "the VIP withdrawn (the watcher stopped)"
  else
    if holds_vip; then held=yes; fi
    direct_service keepalived running && service_stop keepalived
    log "keepalived stopped (it held the VIP: $held)"
  fi
  start=$SECONDS
  if [ "$held" = yes ]; then
    if wait_until "$HANDOFF_WITHIN" peer_holds_vip "$HANDOFF_VIP" "$HANDOFF_PORT"; then
      log "VIP answered by a peer after $((SECONDS - start)) s"
    else
      echo "[$HALAB_STEP] warning: no peer answers on $HANDOFF_VIP:$HANDOFF_PORT after ${HANDOFF_WITHIN}s: the service is down until a load balancer holds the VIP" >&2
    fi
  fi
  if wait_until "$DRAIN_WITHIN" quiet; then
    log "no connection in flight through this node"
  else
    # the clients, by address and port: the first 20 (vrrp.handoffDrainSeconds bounds the wait)
    cut=$(ss -Htn state established src "$HANDOFF_VIP" | awk '{print $4}' | head -n 20 | tr '\n' ' ')
    echo "[$HALAB_STEP] warning: $(in_flight) connections through this node still open after ${DRAIN_WITHIN}s end when it goes: ${cut% }" >&2
  fi
  exit 0
fi

daemon=keepalived
if [ "$HANDOFF_MODE" = ecmp ]; then daemon=frr; fi
direct_service "$daemon" running || die "$daemon is not running here"
wait_until "$READY_WITHIN" python3 "$ctl" serving "${servers[@]}" >/dev/null \
  || die "not serving after ${READY_WITHIN}s: not UP here: $(python3 "$ctl" serving "${servers[@]}" 2>&1 || true)"
# ecmp mode: the router must send this node flows again before the next node withdraws
if [ "$HANDOFF_MODE" = ecmp ]; then
  wait_until "$READY_WITHIN" bgp_announced "$HANDOFF_BGP_PEER" "$HANDOFF_VIP" "$HANDOFF_BFD" \
    || die "the VIP $HANDOFF_VIP is not announced to $HANDOFF_BGP_PEER after ${READY_WITHIN}s"
fi
log "ready to carry the VIP's flows: $daemon runs, every service has a server UP here"
