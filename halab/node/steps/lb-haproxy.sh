#!/usr/bin/env bash
# haproxy on a load balancer: validate the staged haproxy.cfg (and that its ports are free of
# other programs), install it, and start haproxy
# (as user haproxy with the capabilities transparent mode needs) or reload it without dropping
# connections, each server's state carried over (halab-haproxy-state, before every reload).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd haproxy
"$TPROXY_BIN" check || die "TPROXY rules missing: run the tproxy step first"
cfg=$(staged "$HAPROXY_CFG")
if grep -q 'HALAB_STATS_PASSWORD' "$cfg"; then
  [ -s "$HAPROXY_SECRETS" ] || die "haproxy.cfg needs $HAPROXY_SECRETS: run the secrets step first"
fi
# Quiet when valid: `haproxy -c` prints its version every time, and a warning while the
# server-state file is not written yet (before a first reload). When invalid, all of it, which
# says why (`-q` would hide that too), the stats password masked.
checked=$(
  load_haproxy_env
  rc=0
  out=$(haproxy -c -f "$cfg" 2>&1) || rc=$?
  [ -z "${HALAB_STATS_PASSWORD:-}" ] || out=${out//"$HALAB_STATS_PASSWORD"/<the stats password>}
  printf '%s\n' "$out"
  exit "$rc"
) || die "staged haproxy.cfg is invalid (haproxy -c):
$checked"
need_cmd python3
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$(staged "$HAPROXY_STATE_BIN")" \
  || die "staged halab-haproxy-state does not parse"
# haproxy -c does not bind: a port another program listens on would only fail at the restart,
# leaving no haproxy at all. Refuse before anything changes.
need_cmd ss
while read -r port; do
  other=$(ss -H -l -t -n -p "sport = :$port" | grep -v '"haproxy"' || true)
  [ -z "$other" ] || die "port $port is taken by another program here, haproxy could not bind it: $(head -n 1 <<<"$other")"
done < <(sed -nE 's/^[[:space:]]*bind[[:space:]]+[^[:space:]]*:([0-9]+)([[:space:]].*)?$/\1/p' "$cfg" | sort -u)

restart=no reload=no
# Before any reload: what it reads to carry server states over.
stage_install "$HAPROXY_STATE_BIN" 0755 || true
stage_install "$HAPROXY_NEW_SERVERS" 0644 || true
if unit_install "$HAPROXY_DROPIN"; then restart=yes; fi
if stage_install "$HAPROXY_CFG" 0644; then reload=yes; fi
service_converge haproxy "$restart" "$reload"
log "haproxy running ($(head -n 1 "$HAPROXY_PIDFILE"))"
