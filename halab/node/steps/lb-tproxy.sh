#!/usr/bin/env bash
# The packet path of a load balancer (TPROXY, the second chance's marks and rules), applied now
# and at every boot (halab-tproxy.service), and halab-second-chance, which keeps the second
# chance's table on the previous VIP holder (active-standby; ecmp mode's second chance is
# halab-tproxy's copies to the peers alone). The rules themselves live in one place:
# halab/node/files/halab-tproxy; their marks, tables and priorities in the model (PacketPath).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd iptables ip python3
bash -n "$(staged "$TPROXY_BIN")" || die "staged halab-tproxy does not parse"
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$(staged "$SECOND_CHANCE_BIN")" \
  || die "staged halab-second-chance does not parse"
iptables -m socket --help >/dev/null 2>&1 || die "iptables has no socket match (xt_socket)"
iptables -j TPROXY --help >/dev/null 2>&1 || die "iptables has no TPROXY target (xt_TPROXY)"
iptables -m recent --help >/dev/null 2>&1 || die "iptables has no recent match (xt_recent)"
ecmp=no
if grep -qx 'MODE=ecmp' "$(staged "$TPROXY_CONF")"; then ecmp=yes; fi
if [ "$ecmp" = yes ]; then # the second chance's copies to the peers
  iptables -j TEE --help >/dev/null 2>&1 || die "iptables has no TEE target (xt_TEE)"
  iptables -m mac --help >/dev/null 2>&1 || die "iptables has no mac match (xt_mac)"
fi

stage_install "$TPROXY_BIN" 0755 || true
unit_install "$TPROXY_UNIT" || true
restart=no
if stage_install "$TPROXY_CONF" 0644; then restart=yes; fi
if stage_install "$SECOND_CHANCE_BIN" 0755; then restart=yes; fi
if unit_install "$SECOND_CHANCE_UNIT"; then restart=yes; fi
if has_systemd; then
  units_reload
  unit_enable halab-tproxy.service
fi
"$TPROXY_BIN" apply
log "TPROXY rules and policy routing in place"
if [ "$ecmp" = yes ]; then
  # ecmp mode has no previous VIP holder to route to: the copies to the peers do its work
  service_off halab-second-chance
else
  service_converge halab-second-chance "$restart" no
fi
