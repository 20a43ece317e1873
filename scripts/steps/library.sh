#!/usr/bin/env bash
# A node's first step: its library, in one directory (/usr/local/lib/halab): lib.sh, the node's
# step scripts and the static files of scripts/node/ they install. Every later step's bundle
# names each of those files with its sha256 and copies it from here instead of carrying it
# (halab/plan.py): they travel once per node, not in every step, and a bundle refuses a file
# that is not the one it names.
# Validates everything staged first (shell scripts parse, Python scripts compile) and changes
# nothing when that fails; then installs each changed file atomically, and removes the files the
# library no longer holds. A second run changes nothing, and says so. Usage: library.sh DIR
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
dir=${1:?usage: library.sh DIR}
src="${HALAB_STAGE:?HALAB_STAGE is not set: run steps from their bundle}/root$dir"
[ -d "$src" ] || die "the bundle stages no library under $dir"

names=()
for f in "$src"/*; do
  name=${f##*/}
  case "$(head -n 1 "$f")" in
    '#!'*python3*)
      # python3 comes with the cloud image; the step that installs the script checks it again
      if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$f" || die "staged $name does not parse"
      fi
      ;;
    '#!'*sh | '# shellcheck shell=bash') bash -n "$f" || die "staged $name does not parse" ;;
  esac
  names+=("$name")
done

changed=0
for name in "${names[@]}"; do
  if stage_install "$dir/$name" 0644; then changed=$((changed + 1)); fi
done
for f in "$dir"/*; do # what an earlier library held and this one does not (a file renamed)
  if [ -e "$f" ] && [ ! -e "$src/${f##*/}" ]; then
    rm -f "$f"
    log "removed $f"
    changed=$((changed + 1))
  fi
done
if [ "$changed" -eq 0 ]; then
  log "library unchanged: ${#names[@]} files in $dir"
else
  log "library in place: ${#names[@]} files in $dir, $changed changed"
fi
