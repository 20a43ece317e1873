#!/usr/bin/env bash
# TPROXY rules and policy routing on a load balancer, applied now and at every boot
# (halab-tproxy.service). The rules themselves live in one place: halab/node/files/halab-tproxy.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd iptables ip
bash -n "$(staged "$TPROXY_BIN")" || die "staged halab-tproxy does not parse"
iptables -m socket --help >/dev/null 2>&1 || die "iptables has no socket match (xt_socket)"

stage_install "$TPROXY_BIN" 0755 || true
unit_install "$TPROXY_UNIT" || true
if has_systemd; then
  units_reload
  unit_enable halab-tproxy.service
fi
"$TPROXY_BIN" apply
log "TPROXY rules and policy routing in place"
