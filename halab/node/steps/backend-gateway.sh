#!/usr/bin/env bash
# A backend's routes, now and at every boot (halab-routes.service): in active-standby mode its
# default gateway becomes the VIP (and on-subnet test clients are routed via the VIP); in ecmp
# mode the router, and each load balancer's connections go back through it. Refuses to switch
# while the gateway does not answer: a backend without a working gateway is worse than one on
# the old gateway.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd ip ping
conf=$(staged "$ROUTES_CONF")
bash -n "$(staged "$ROUTES_BIN")" || die "staged halab-routes does not parse"
gw=$(sed -n "s/^GATEWAY=//p" "$conf")
[ -n "$gw" ] || die "routes.conf names no GATEWAY"
if grep -q '^RETURN="[^"]' "$conf"; then need_cmd iptables; fi
wait_until "${HALAB_VIP_WAIT:-60}" ping -c 1 -W 1 -q "$gw" >/dev/null \
  || die "the gateway $gw does not answer: are the load balancers (or the router) up? (gateway left unchanged)"

stage_install "$ROUTES_CONF" 0644 || true
stage_install "$ROUTES_BIN" 0755 || true
unit_install "$ROUTES_UNIT" || true
if has_systemd; then
  units_reload
  unit_enable halab-routes.service
fi
"$ROUTES_BIN" apply
log "default route via $gw: $(ip -4 route show default)"
