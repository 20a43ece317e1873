#!/usr/bin/env bash
# The secrets haproxy.cfg reads from its environment (the stats password), in a root-only file:
# the config itself holds none. haproxy reads its environment at start only, so a changed
# secret restarts a running haproxy (a reload would keep the old one).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
# 12 characters at least, or empty when the stats page is off.
grep -qE '^HALAB_STATS_PASSWORD=(.{12,})?$' "$(staged "$HAPROXY_SECRETS")" \
  || die "staged halab-secrets.env has no usable HALAB_STATS_PASSWORD"

if stage_install "$HAPROXY_SECRETS" 0600 && direct_service haproxy running; then
  service_converge haproxy yes no
fi
log "haproxy secrets in place"
