#!/usr/bin/env bash
# Installs the named packages that are missing, without starting their daemons, and nothing else
# (a node that has them all is left untouched). Usage: packages.sh PACKAGE...
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
# Installed, not started (policy-rc.d says no to every start): each node's steps start what they
# configure, in their order, as on the VM image (halab/drivers/vmlab/build-image). A backend's Apache
# started here would serve Debian's page, pass haproxy's check and get clients before its
# gateway step: their replies would go to the hypervisor, not back through the VIP.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# ha-lb-lab, while its packages step installs: no daemon starts\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
log "installing: ${missing[*]}"
"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
