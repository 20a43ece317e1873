#!/usr/bin/env bash
# A node's first step: its library, in one directory ($LIBRARY_DIR): lib.sh, the node's
# step scripts and the static files of halab/node/files/ they install. Every later step's bundle
# names each of those files with its sha256 and copies it from here instead of carrying it
# (halab/core/step.py): they travel once per node, not in every step, and a bundle refuses a file
# that is not the one it names.
# Each file is kept by name (what this version holds, for a reader) and by its sha256, under
# DIR/sha256/, where the bundles read it. Those are never removed: a roll-out gate's delete runs
# the bundle it was created with, maybe versions ago, and must find the very files it names
# (a version of every file is a few tens of KB).
# Validates everything staged first (shell scripts parse, Python scripts compile) and changes
# nothing when that fails; then installs each changed file atomically, and removes the named
# files the library no longer holds. A second run changes nothing, and says so.
# Usage: library.sh DIR
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
  sum=$(sha256sum <"$src/$name")
  kept="$dir/sha256/${sum%% *}"
  if [ ! -f "$kept" ]; then
    install -D -m 0644 "$src/$name" "$kept.halab-new"
    mv -f "$kept.halab-new" "$kept"
  fi
done
for f in "$dir"/*; do # what an earlier library held and this one does not (a file renamed)
  if [ -f "$f" ] && [ ! -e "$src/${f##*/}" ]; then
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
