#!/usr/bin/env bash
# Installs the named packages that are missing, and nothing else (a node that has them all is
# left untouched). Usage: packages.sh PACKAGE...
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "all present: $*"
  exit 0
fi

need_cmd apt-get apt-cache
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -q -o DPkg::Lock::Timeout=300)
"${apt[@]}" update
for p in "${missing[@]}"; do
  apt-cache policy "$p" | grep -q 'Candidate: [^(]' || die "no installable candidate for package $p"
done
log "installing: ${missing[*]}"
"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
