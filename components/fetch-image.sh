#!/usr/bin/env bash
# The guest image, into the user's cache, used only once its bytes match its checksum: the
# libvirt provider checks none, and every base volume is made from the file this leaves
# (components/image.py). Run on the machine running pulumi by a local Command, which gives:
#   HALAB_IMAGE     halab:image, an http(s) URL or an absolute path
#   HALAB_CHECKSUM  halab:imageChecksum, sha512:HEX or sha256:HEX
#   HALAB_CACHED    where the checked image goes (named by its checksum)
# A file already there is checked again, not trusted. A fetch that fails or does not match
# leaves nothing behind and changes nothing.
set -euo pipefail
image=${HALAB_IMAGE:?} checksum=${HALAB_CHECKSUM:?} cached=${HALAB_CACHED:?}
algo=${checksum%%:*} want=${checksum#*:}
case $algo in sha256 | sha512) ;; *) echo "error: halab:imageChecksum $checksum: sha256 or sha512" >&2; exit 1 ;; esac
digest() { "${algo}sum" <"$1" | cut -d' ' -f1; }

if [ -f "$cached" ] && [ "$(digest "$cached")" = "$want" ]; then
  echo "image: $cached ($algo checked)"
  exit 0
fi
mkdir -p "$(dirname "$cached")"
tmp=$(mktemp "$cached.XXXXXX")
trap 'rm -f "$tmp"' EXIT
case $image in
  /*) cp -- "$image" "$tmp" ;;
  *)
    command -v curl >/dev/null || { echo "error: curl is needed to fetch $image (apt-get install curl)" >&2; exit 1; }
    curl -fsSL --retry 3 -o "$tmp" "$image" \
      || { echo "error: could not fetch $image (halab:image): nothing was changed" >&2; exit 1; }
    ;;
esac
got=$(digest "$tmp")
if [ "$got" != "$want" ]; then
  echo "error: $image (halab:image) has $algo $got, not $want (halab:imageChecksum): it was not used," \
    "nothing was changed" >&2
  exit 1
fi
chmod 0644 "$tmp"
mv -f -- "$tmp" "$cached"
trap - EXIT
echo "image: $image -> $cached ($algo checked)"
