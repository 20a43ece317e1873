#!/usr/bin/env bash
# The TCP banner on a backend, for the balanced services that are not HTTP and whose pool holds
# this backend: it tells each client which backend answered and which client address it saw.
# Validated (the script compiles, the ports are free or already its own) before it is installed
# and (re)started. A backend in no TCP service's pool runs no banner.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
if ! grep -qE '^[0-9]+ ' "$(staged "$BANNER_CONF")"; then
  service_off halab-banner
  log "no TCP service here: halab-banner off"
  exit 0
fi
need_cmd python3 ss
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$(staged "$BANNER_BIN")" \
  || die "staged halab-banner does not parse"
while read -r port _; do
  [[ "$port" =~ ^[0-9]+$ ]] || continue
  if ! direct_service halab-banner running && [ -n "$(ss -H -l -t -n "sport = :$port")" ]; then
    die "port $port is already taken on this backend: $(ss -H -l -t -n -p "sport = :$port" | head -n 1)"
  fi
done <"$(staged "$BANNER_CONF")"

restart=no
if stage_install "$BANNER_BIN" 0755; then restart=yes; fi
if stage_install "$BANNER_CONF" 0644; then restart=yes; fi
if unit_install "$BANNER_UNIT"; then restart=yes; fi
service_converge halab-banner "$restart" no
# running is not serving: each port listens before the step says so (a started banner binds
# its ports a moment later)
ports=$(grep -oE '^[0-9]+' "$BANNER_CONF")
for port in $ports; do
  # shellcheck disable=SC2016  # expanded by the inner bash, $1 being the port
  wait_until 5 bash -c '[ -n "$(ss -H -l -t -n "sport = :$1")" ]' _ "$port" \
    || die "halab-banner runs but does not listen on port $port"
done
log "halab-banner serving ports: $(tr '\n' ' ' <<<"$ports")"
