#!/usr/bin/env bash
# FRR on a load balancer in ecmp mode: its BGP session (and BFD) to the router, and the haproxy
# watcher that sets the VIP's route bgpd announces while haproxy serves. Validates everything
# staged first (`vtysh -C` on the new frr.conf, the watcher parses, haproxy runs), and only then
# installs and starts or reloads: a broken config changes nothing on the node. A changed frr.conf
# is applied by frr-reload.py (what changed only: the session stays up).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd vtysh ip python3
frr_check
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$(staged "$WATCH_BIN")" \
  || die "staged halab-haproxy-watch does not parse"
grep -q '^ANNOUNCE=' "$(staged "$WATCH_CONF")" || die "staged haproxy-watch.conf names no ANNOUNCE (the VIP)"
direct_service haproxy running || die "haproxy is not running here: this node would announce a VIP it cannot serve"

frr_converge

# A new VIP: the old one leaves lo (the watcher only ever sets the one it is given), or this
# node would go on taking traffic for it
old_vip=$(sed -n 's/^ANNOUNCE=//p' "$WATCH_CONF" 2>/dev/null || true)
new_vip=$(sed -n 's/^ANNOUNCE=//p' "$(staged "$WATCH_CONF")")
if [ -n "$old_vip" ] && [ "$old_vip" != "$new_vip" ] && ip -4 addr del "$old_vip/32" dev lo 2>/dev/null; then
  log "the old VIP $old_vip left lo: no longer announced"
fi
watch=no
if stage_install "$WATCH_BIN" 0755; then watch=yes; fi
if stage_install "$WATCH_CONF" 0644; then watch=yes; fi
if unit_install "$WATCH_UNIT"; then watch=yes; fi
if unit_install "$WATCH_ECMP_DROPIN"; then watch=yes; fi
service_converge halab-haproxy-watch "$watch" no
wait_until 5 test -s "$WATCH_HEALTH" || die "halab-haproxy-watch wrote no health file"
# its announcement as a metric, where node-exporter's textfile collector reads
mkdir -p "$(dirname "$BGP_TEXTFILE")"
[ "$(readlink "$BGP_TEXTFILE" 2>/dev/null)" = "$WATCH_ANNOUNCED" ] || ln -sfn "$WATCH_ANNOUNCED" "$BGP_TEXTFILE"
log "bgpd running ($(head -n 1 "$FRR_RUN_DIR/bgpd.pid")); the VIP on lo: $(ip -4 -o addr show dev lo to "$(sed -n 's/^ANNOUNCE=//p' "$WATCH_CONF")/32" | awk '{print $4}')"
