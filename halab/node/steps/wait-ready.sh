#!/usr/bin/env bash
# First step on a fresh node: wait until cloud-init has finished (users, network, apt sources),
# so the package step does not race it for the apt lock. A no-op where cloud-init did not run
# this boot (no /run/cloud-init: a namespace-lab node, or a host without cloud-init).
#
# cloud-init says `error` when any module failed, including ones the lab does not need (the
# locale module fails on an image without the `locales` package). What the steps need is that
# cloud-init went through its final stage (boot-finished), with the user and network in place:
# then a module error is reported as a warning, with the modules named, and the steps go on.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

if command -v cloud-init >/dev/null 2>&1 && [ -d /run/cloud-init ]; then
  status=$(timeout 900 cloud-init status --wait 2>&1 | tail -n 1) || true
  case "$status" in
    *done* | *disabled*) log "cloud-init: $status" ;;
    *error*)
      # `status --wait` returns at the first error, while later stages may still be running
      wait_until 600 test -e /var/lib/cloud/instance/boot-finished \
        || die "cloud-init did not reach its final stage: $status (see /var/log/cloud-init-output.log)"
      errors=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["v1"]; print("; ".join(r.get("errors") or []))' \
        /run/cloud-init/result.json 2>/dev/null || true)
      log "warning: cloud-init finished with module errors: ${errors:-see /var/log/cloud-init.log}"
      ;;
    *) die "cloud-init did not finish cleanly: $status (see /var/log/cloud-init-output.log)" ;;
  esac
fi
log "node ready: $(hostname)"
