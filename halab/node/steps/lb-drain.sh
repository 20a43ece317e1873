#!/usr/bin/env bash
# One backend out of and back into this load balancer's haproxy, around its guest's replacement
# or removal (halab/core/rolling.py). Run as a step (the gate): the backend's servers ready, and the
# step returns once each is UP and checked here, bounded; the next batch of backends is replaced
# only then. Run with HALAB_ON_DELETE=1 (the step's delete, before the guest is deleted): its
# servers in maintenance (no new connection, sticky ones included, no checks), then a bounded
# wait for this node's connections to it to end, old haproxy processes' included.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd python3 ss
# shellcheck source=/dev/null
. "$(staged "$DRAIN_CONF")"
ctl=$(staged "$HAPROXY_CTL_BIN")
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$ctl" || die "staged halab-haproxy-ctl does not parse"
read -r -a servers <<<"$DRAIN_SERVERS"

connections() {
  ss -Htn state established dst "$DRAIN_ADDRESS" | wc -l
}
# shellcheck disable=SC2317 # called through wait_until
drained() {
  [ "$(connections)" -eq 0 ]
}

# HALAB_LB_ID (this load balancer's guest) is not read here: it is in the driver's command line
# so that a new guest of this load balancer runs this create again, in place (rollout.py).
# The backend guest this haproxy last took into service (HALAB_BACKEND_ID, its domain's ID, where
# the driver knows it): a delete for another guest, once a newer one took its place, changes nothing.
marker=$IN_SERVICE_DIR/$DRAIN_BACKEND

if [ -n "${HALAB_ON_DELETE:-}" ]; then
  if [ -n "${HALAB_BACKEND_ID:-}" ] && [ -f "$marker" ] && [ "$(cat "$marker")" != "$HALAB_BACKEND_ID" ]; then
    log "$DRAIN_BACKEND: a newer guest ($(cat "$marker")) is in service here: nothing to drain"
    exit 0
  fi
  if [ ! -S "$HAPROXY_ADMIN_SOCK" ]; then
    log "haproxy is not running here: nothing to drain of $DRAIN_BACKEND"
    exit 0
  fi
  python3 "$ctl" set maint "${servers[@]}"
  start=$SECONDS
  if wait_until "$DRAIN_WITHIN" drained; then
    log "$DRAIN_BACKEND drained: in maintenance, no connection left after $((SECONDS - start)) s"
  else
    echo "[$HALAB_STEP] warning: $DRAIN_BACKEND in maintenance; $(connections) connections still open after ${DRAIN_WITHIN}s are cut with its guest" >&2
  fi
  exit 0
fi

[ -S "$HAPROXY_ADMIN_SOCK" ] || die "haproxy is not running (no $HAPROXY_ADMIN_SOCK)"
python3 "$ctl" set ready "${servers[@]}"
if [ -n "${HALAB_BACKEND_ID:-}" ]; then
  install -d -m 0755 "${marker%/*}"
  printf '%s\n' "$HALAB_BACKEND_ID" >"$marker.new" && mv -f "$marker.new" "$marker"
fi
if wait_until "$READY_WITHIN" python3 "$ctl" up "${servers[@]}" >/dev/null; then
  log "$DRAIN_BACKEND in service here: ${servers[*]} UP"
  exit 0
fi
die "$DRAIN_BACKEND not UP here after ${READY_WITHIN}s: $(python3 "$ctl" up "${servers[@]}" 2>&1 || true)"
