#!/usr/bin/env bash
# Apache on a backend: a page that names the backend and the client address it saw, on the port
# of every HTTP service whose pool holds this backend. The change is tried on a copy of
# $APACHE_DIR (apache2 -t) before it touches the real one. A backend in no HTTP service's pool
# runs no Apache at all: nothing answers on a web port there.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
if ! grep -q '^Listen ' "$(staged "$APACHE_PORTS_CONF")"; then
  service_off apache2
  log "no HTTP service here: apache2 off"
  exit 0
fi
need_cmd apache2ctl apache2 a2enmod

site=$(staged "$APACHE_SITE")
mods=(include)
grep -q 'RemoteIP' "$site" && mods+=(remoteip)
if grep -q 'SSLEngine on' "$site"; then
  mods+=(ssl socache_shmcb)
  # ssl-cert's postinst makes this pair; some images ship the package without it.
  if [ ! -s "$SNAKEOIL_CERT" ]; then
    need_cmd make-ssl-cert
    DEBIAN_FRONTEND=noninteractive make-ssl-cert generate-default-snakeoil # no debconf frontend lines
    log "generated the snakeoil certificate"
  fi
fi

# configure ROOT: the staged files and the enabled modules and sites, under ROOT (an apache
# config dir); prints what it changed.
configure() {
  local root=$1 m
  cmp -s "$(staged "$APACHE_PORTS_CONF")" "$root/ports.conf" || { cp "$(staged "$APACHE_PORTS_CONF")" "$root/ports.conf"; echo ports.conf; }
  cmp -s "$site" "$root/sites-available/halab.conf" || { cp "$site" "$root/sites-available/halab.conf"; echo site; }
  for m in "${mods[@]}"; do
    [ -e "$root/mods-enabled/$m.load" ] && continue
    ln -s "../mods-available/$m.load" "$root/mods-enabled/$m.load"
    [ -e "$root/mods-available/$m.conf" ] && ln -sf "../mods-available/$m.conf" "$root/mods-enabled/$m.conf"
    echo "mod $m"
  done
  for s in 000-default default-ssl; do
    [ -e "$root/sites-enabled/$s.conf" ] && { rm -f "$root/sites-enabled/$s.conf"; echo "site $s off"; }
  done
  [ -e "$root/sites-enabled/halab.conf" ] || { ln -s ../sites-available/halab.conf "$root/sites-enabled/halab.conf"; echo "site halab on"; }
}

trial=$(mktemp -d)
trap 'rm -rf "$trial"' EXIT
cp -a "$APACHE_DIR/." "$trial/"
configure "$trial" >/dev/null
# shellcheck source=/dev/null
# quiet when valid ("Syntax OK" on every run would bury what the step changed)
syntax=$( (set +u && . "$APACHE_ENVVARS" && mkdir -p "$APACHE_RUN_DIR" && apache2 -d "$trial" -t) 2>&1) \
  || die "the new apache configuration is invalid (apache2 -t): $syntax"

page=no
if stage_install "$INDEX_PAGE" 0644; then page=yes; fi
changes=$(configure "$APACHE_DIR")
[ -n "$changes" ] && log "apache: $(tr '\n' ' ' <<<"$changes")"
reload=no
[ -n "$changes" ] && reload=yes
service_converge apache2 no "$reload"
[ "$page" = yes ] && log "page installed"
log "apache2 serving ports: $(grep -o '[0-9]*' "$(staged "$APACHE_PORTS_CONF")" | tr '\n' ' ')"
