#!/usr/bin/env bash
# keepalived on a load balancer: validate everything staged first (the scripts parse, and
# `keepalived -t` passes on the new keepalived.conf with the new scripts), and only then install
# its hooks (haproxy check and watcher, state-change log, VRRP filter and VIP release) and the
# conf (0600: it holds the VRRP secret), and start or reload keepalived. A broken conf changes
# nothing on the node.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd keepalived ss
conf=$(staged "$KEEPALIVED_CONF")
for script in "$KEEPALIVED_CHECK" "$KEEPALIVED_NOTIFY" "$KEEPALIVED_HOOKS_BIN"; do
  bash -n "$(staged "$script")" || die "staged $script does not parse"
done
need_cmd python3
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$(staged "$WATCH_BIN")" \
  || die "staged halab-haproxy-watch does not parse"
direct_service haproxy running || die "haproxy is not running here: keepalived would only hold the VIP in FAULT"
keepalived_test "$conf" || die "staged keepalived.conf is invalid (keepalived -t)"

reload=no restart=no
if stage_install "$KEEPALIVED_CHECK" 0755; then reload=yes; fi
if stage_install "$KEEPALIVED_NOTIFY" 0755; then reload=yes; fi
# The watcher first: keepalived tracks the file it writes.
watch=no
if stage_install "$WATCH_BIN" 0755; then watch=yes; fi
if stage_install "$WATCH_CONF" 0644; then watch=yes; fi
if unit_install "$WATCH_UNIT"; then watch=yes; fi
service_converge halab-haproxy-watch "$watch" no
wait_until 5 test -s "$WATCH_HEALTH" || die "halab-haproxy-watch wrote no health file"
stage_install "$KEEPALIVED_HOOKS_BIN" 0755 || true
if stage_install "$VRRP_CONF" 0644; then
  "$KEEPALIVED_HOOKS_BIN" filter # peers changed: the filter now, not at the next start
fi
if unit_install "$KEEPALIVED_DROPIN"; then restart=yes; fi
if stage_install "$KEEPALIVED_CONF" 0600; then reload=yes; fi
# A first start while a peer holds the VIP (this guest replaced in a roll-out, or keepalived
# stopped by a hand-off): with `preempt` this node would take the VIP at once, into a fresh
# haproxy whose servers are not yet checked UP. It joins once this haproxy serves every service,
# or once its checks have settled with no server on its way UP (the first `up`, whose backends
# are configured after the load balancers: nothing to wait for), bounded: past that it joins
# anyway, and says so.
if ! direct_service keepalived running; then
  # shellcheck source=/dev/null
  . "$(staged "$JOIN_CONF")"
  if peer_holds_vip "$JOIN_VIP" "$JOIN_PORT"; then
    ctl=$(staged "$HAPROXY_CTL_BIN")
    start=$SECONDS
    serves_or_settled() { python3 "$ctl" serving >/dev/null || python3 "$ctl" settled >/dev/null; }
    if ! wait_until "$JOIN_WITHIN" serves_or_settled; then
      echo "[$HALAB_STEP] warning: joining after ${JOIN_WITHIN}s though this haproxy does not serve every service: $(python3 "$ctl" serving 2>&1 || true)" >&2
    elif python3 "$ctl" serving >/dev/null; then
      log "a peer holds the VIP: joining once this haproxy serves ($((SECONDS - start)) s)"
    else
      log "a peer holds the VIP: joining, no server on its way UP here ($((SECONDS - start)) s): $(python3 "$ctl" serving 2>&1 | tr '\n' ' ')"
    fi
  fi
fi
service_converge keepalived "$restart" "$reload"
log "keepalived running ($(head -n 1 "$KEEPALIVED_PIDFILE"))"
