#!/usr/bin/env bash
# First step on a fresh node: wait until cloud-init has finished (users, network, apt sources),
# so the package step does not race it for the apt lock. A no-op where cloud-init did not run
# this boot (no /run/cloud-init: a namespace-lab node, or a host without cloud-init).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

if command -v cloud-init >/dev/null 2>&1 && [ -d /run/cloud-init ]; then
  status=$(timeout 900 cloud-init status --wait 2>&1 | tail -n 1) || true
  case "$status" in
    *done* | *disabled*) log "cloud-init: $status" ;;
    *) die "cloud-init did not finish cleanly: $status (see /var/log/cloud-init-output.log)" ;;
  esac
fi
log "node ready: $(hostname)"
