#!/usr/bin/env bash
# Installs a staged sysctl.d file, applies it and reads every value back.
# Usage: sysctl.sh /etc/sysctl.d/NN-name.conf
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd sysctl

file=$1
src=$(staged "$file")
settings=()
while IFS= read -r line; do
  [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
  key=$(sed -E 's/^[[:space:]]*([^=[:space:]]+)[[:space:]]*=.*/\1/' <<<"$line")
  value=$(sed -E 's/^[^=]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$/\1/' <<<"$line")
  [ -e "/proc/sys/${key//.//}" ] || die "this kernel has no $key (from $file)"
  settings+=("$key=$value")
done <"$src"

stage_install "$file" 0644 || true
sysctl -q -p "/${file#/}" >/dev/null
for kv in "${settings[@]}"; do
  # a value of several numbers reads back separated by tabs
  actual=$(sysctl -n "${kv%%=*}" | tr -s '\t ' '  ')
  want=$(tr -s '\t ' '  ' <<<"${kv#*=}")
  [ "$actual" = "$want" ] || die "${kv%%=*} is $actual, not $want"
done
log "${#settings[@]} settings in force from /${file#/}"
