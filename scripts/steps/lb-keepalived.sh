#!/usr/bin/env bash
# keepalived on a load balancer: install its haproxy check, validate the staged keepalived.conf
# (keepalived -t), install it (0600: it holds the VRRP secret) and start or reload keepalived.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd keepalived ss
conf=$(staged /etc/keepalived/keepalived.conf)
bash -n "$(staged /etc/keepalived/halab-check-haproxy)" || die "staged halab-check-haproxy does not parse"
direct_service haproxy running || die "haproxy is not running here: keepalived would only hold the VIP in FAULT"

reload=no
if stage_install /etc/keepalived/halab-check-haproxy 0755; then reload=yes; fi
keepalived_test "$conf" || die "staged keepalived.conf is invalid (keepalived -t)"
if stage_install /etc/keepalived/keepalived.conf 0600; then reload=yes; fi
service_converge keepalived no "$reload"
log "keepalived running ($(head -n 1 "$KEEPALIVED_PIDFILE"))"
