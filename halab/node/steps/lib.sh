# shellcheck shell=bash
# Shared by every step script. A step runs as root on a node (a VM over SSH, or a namespace-lab
# node), from a bundle that staged its files under $HALAB_STAGE/root/<absolute path>.
#
# The one place where a VM and a namespace-lab node differ is the service manager: with systemd
# a step enables and reloads units; without it (the lab) `direct_service` starts and reloads the
# same daemons from the same files, with the same pidfiles and the same privileges.

HALAB_STEP=${HALAB_STEP:-$(basename "$0" .sh)}
# Capabilities haproxy keeps after leaving root: same list as halab/node/files/haproxy-halab.conf.
HAPROXY_CAPS=net_admin,net_raw,net_bind_service,sys_chroot
# The node paths, declared once (paths.sh, beside this file here and in every bundle's stage).
# shellcheck source=paths.sh
. "$(dirname "${BASH_SOURCE[0]}")/paths.sh"

log() { printf '[%s] %s\n' "$HALAB_STEP" "$*"; }
die() {
  printf '[%s] error: %s\n' "$HALAB_STEP" "$*" >&2
  exit 1
}

# A driver that reaches a node by its address names the node it means in HALAB_GUEST: another
# guest may answer there (a node renamed, or its address given to another node, while the old
# guest still runs until the end of the update), and a step on it must change nothing.
need_guest() {
  [ -z "${HALAB_GUEST:-}" ] || [ "$(uname -n)" = "$HALAB_GUEST" ] \
    || die "this is $(uname -n), not $HALAB_GUEST: another guest answers at this address (a node renamed, or its address given to another, while the old guest runs); nothing was changed. Rename in two updates: remove the node, then add it under its new name"
}
need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  need_guest
}
need_cmd() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "command not found: $c"; done
}

staged() {
  local f="${HALAB_STAGE:?HALAB_STAGE is not set: run steps from their bundle}/root/${1#/}"
  [ -f "$f" ] || die "the bundle lacks /${1#/}"
  printf '%s\n' "$f"
}

# stage_install PATH MODE: puts the staged PATH in place atomically; succeeds only if it changed.
stage_install() {
  local dst="/${1#/}" mode=$2 src
  src=$(staged "$1")
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    return 1
  fi
  install -D -m "$mode" "$src" "$dst.halab-new"
  mv -f "$dst.halab-new" "$dst"
  log "installed $dst"
}

has_systemd() { [ -d "$SYSTEMD_RUNTIME_UNITS" ]; }

pid_alive() {
  local pid
  pid=$(head -n 1 "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# peer_holds_vip VIP PORT: another node holds the VIP and answers on PORT (a connection from
# here, the VIP not being on this node, reaches the node that has it).
peer_holds_vip() {
  ! ip -o addr show to "$1/32" | grep -q . && timeout 1 bash -c ": </dev/tcp/$1/$2" 2>/dev/null
}

# wait_until SECONDS CMD...: polls CMD every 0.2 s, bounded.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# The environment haproxy.cfg expands (systemd: EnvironmentFile in the drop-in).
load_haproxy_env() {
  if [ -f "$HAPROXY_SECRETS" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$HAPROXY_SECRETS"
    set +a
  fi
}

# start_unprivileged PIDFILE LOG CAPS CMD...: CMD in the background as nobody, in its own
# session, keeping only CAPS (comma-separated, or "" for none), as a unit with User=nobody does.
start_unprivileged() {
  local pidfile=$1 logfile=$2 caps=$3
  shift 3
  local capargs=(--inh-caps=-all)
  [ -n "$caps" ] && capargs=(--inh-caps="+${caps//,/,+}" --ambient-caps="+${caps//,/,+}")
  setsid setpriv --reuid=nobody --regid=nogroup --clear-groups "${capargs[@]}" "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
}

# direct_service NAME start|reload|running: the daemons without systemd (namespace lab).
direct_service() {
  local name=$1 action=$2
  case "$name:$action" in
    haproxy:running) pid_alive "$HAPROXY_PIDFILE" ;;
    haproxy:start)
      install -d -o haproxy -g haproxy -m 0755 "$HAPROXY_RUN_DIR"
      # A start checks every server afresh, as under systemd (RuntimeDirectory goes at a stop).
      rm -f "$HAPROXY_SERVER_STATE"
      load_haproxy_env
      setpriv --reuid=haproxy --regid=haproxy --init-groups \
        --inh-caps="+${HAPROXY_CAPS//,/,+}" --ambient-caps="+${HAPROXY_CAPS//,/,+}" \
        haproxy -W -D -f "$HAPROXY_CFG" -p "$HAPROXY_PIDFILE" -S "$HAPROXY_MASTER_SOCK" \
        >"$HAPROXY_RUN_DIR/start.log" 2>&1 || die "haproxy did not start: $(cat "$HAPROXY_RUN_DIR/start.log")"
      ;;
    haproxy:reload)
      # What the unit's ExecReload does: server states carried over first.
      "$HAPROXY_STATE_BIN"
      kill -USR2 "$(head -n 1 "$HAPROXY_PIDFILE")"
      ;;
    haproxy:restart)
      service_stop haproxy
      direct_service haproxy start
      ;;
    keepalived:running) pid_alive "$KEEPALIVED_PIDFILE" ;;
    keepalived:start)
      # What the systemd drop-in does (halab/node/files/keepalived-halab.conf): hooks before and
      # after; keepalived in the foreground of its own session, logging to a file (no syslog).
      # shellcheck disable=SC2016
      setsid bash -c '"$2" pre &&
        keepalived --dont-fork --log-console --log-detail --no-syslog -f "$3" -p "$1"
        "$2" post' halab-keepalived "$KEEPALIVED_PIDFILE" "$KEEPALIVED_HOOKS_BIN" "$KEEPALIVED_CONF" \
        </dev/null >>"$KEEPALIVED_LOG" 2>&1 &
      ;;
    keepalived:reload) kill -HUP "$(head -n 1 "$KEEPALIVED_PIDFILE")" ;;
    halab-banner:running) pid_alive "$BANNER_PIDFILE" ;;
    halab-banner:start)
      # As its unit runs it: unprivileged, allowed to bind ports below 1024.
      start_unprivileged "$BANNER_PIDFILE" /run/halab-banner.log net_bind_service \
        python3 "$BANNER_BIN" "$BANNER_CONF"
      ;;
    halab-haproxy-watch:running) pid_alive "$WATCH_PIDFILE" ;;
    halab-haproxy-watch:start)
      install -d -o nobody -g nogroup -m 0755 "$WATCH_DIR"
      # ecmp mode: it sets the VIP's route (its drop-in gives it net_admin under systemd)
      local watch_caps=""
      if grep -q '^ANNOUNCE=' "$WATCH_CONF"; then watch_caps=net_admin; fi
      start_unprivileged "$WATCH_PIDFILE" /run/halab-haproxy-watch.log "$watch_caps" \
        "$WATCH_BIN" "$WATCH_CONF" "$WATCH_HEALTH" "$WATCH_SERVING"
      ;;
    frr:running) pid_alive "$FRR_RUN_DIR/bgpd.pid" ;;
    frr:start)
      # As Debian's frrinit.sh starts them, without watchfrr: zebra first (bfdd and bgpd are its
      # clients), no TCP vty (-P 0); the daemons wait for their config from `vtysh -b`, which
      # reads the integrated frr.conf.
      install -d -o frr -g frr -m 0755 "$FRR_RUN_DIR"
      /usr/lib/frr/zebra -d -P 0 -A 127.0.0.1 -s 90000000
      wait_until 10 test -S "$FRR_RUN_DIR/zserv.api" || die "zebra did not start"
      /usr/lib/frr/bfdd -d -P 0 -A 127.0.0.1
      /usr/lib/frr/bgpd -d -P 0 -A 127.0.0.1
      wait_until 10 test -S "$FRR_RUN_DIR/bgpd.vty" || die "bgpd did not start"
      vtysh -b >/dev/null || die "vtysh -b could not apply $FRR_CONF"
      ;;
    frr:reload)
      # Only what changed (frr-reload.py diffs the running config): no session drops for it.
      /usr/lib/frr/frr-reload.py --reload "$FRR_CONF" >/dev/null || die "frr-reload.py failed on $FRR_CONF"
      ;;
    frr:restart)
      service_stop frr
      direct_service frr start
      ;;
    halab-second-chance:running) pid_alive "$SECOND_CHANCE_PIDFILE" ;;
    halab-second-chance:start)
      setsid "$SECOND_CHANCE_BIN" "$TPROXY_CONF" </dev/null >>"$SECOND_CHANCE_LOG" 2>&1 &
      echo $! >"$SECOND_CHANCE_PIDFILE"
      ;;
    halab-banner:restart | halab-banner:reload | halab-haproxy-watch:restart | halab-haproxy-watch:reload | \
      halab-second-chance:restart | halab-second-chance:reload)
      service_stop "$name"
      direct_service "$name" start
      ;;
    apache2:running) pid_alive "$APACHE_PIDFILE" ;;
    apache2:start) apache2ctl start ;;
    apache2:reload) apache2ctl graceful ;;
    *) die "direct_service: unknown $name $action" ;;
  esac
}

# service_converge NAME RESTART RELOAD: enabled and running; restarted or reloaded when asked
# (yes/no). Reload keeps established connections (haproxy master-worker, keepalived HUP). A
# drill's hold on NAME (drill.sh kill) would make systemd skip the start: it goes first, whether
# the drill's restore asks or a step finds one a verifier killed mid-drill left behind.
service_converge() {
  local name=$1 restart=$2 reload=$3
  if has_systemd; then
    if [ -e "$HOLD_DIR/$name" ]; then
      log "$name was held down by a drill ($HOLD_DIR/$name): hold removed"
      rm -f "$HOLD_DIR/$name"
    fi
    units_reload
    unit_enable "$name"
    if ! systemctl is-active --quiet "$name"; then
      log "starting $name"
      systemctl start "$name"
    elif [ "$restart" = yes ]; then
      log "restarting $name"
      systemctl restart "$name"
    elif [ "$reload" = yes ]; then
      log "reloading $name"
      systemctl reload "$name"
    fi
    systemctl is-active --quiet "$name" || die "$name is not running: journalctl -u $name"
  else
    if ! direct_service "$name" running; then
      log "starting $name"
      direct_service "$name" start
    elif [ "$restart" = yes ] && [ "$name" != keepalived ] && [ "$name" != apache2 ]; then
      log "restarting $name"
      direct_service "$name" restart
    elif [ "$restart" = yes ] || [ "$reload" = yes ]; then
      log "reloading $name"
      direct_service "$name" reload
    fi
    wait_until 10 direct_service "$name" running || die "$name is not running"
  fi
}

# frr_bfd_converge CONF: no BFD on a BGP neighbor CONF gives none. frr-reload.py (FRR 8.4) turns a
# `neighbor X bfd profile P` line removed from the file into `no neighbor X bfd profile P` only:
# `neighbor X bfd` stays in the running config, and BFD with it, at its default timers (seen in
# the ecmp mutation test: a link cut still seen in 0.76 s with `bgp.bfd` off).
frr_bfd_converge() {
  local conf=$1 asn who
  asn=$(sed -n 's/^router bgp \([0-9]*\)$/\1/p' "$conf")
  for who in $(vtysh -c "show running-config" | sed -n 's/^ neighbor \(\S*\) bfd$/\1/p'); do
    grep -q "^ neighbor $who bfd" "$conf" && continue
    vtysh -c "configure terminal" -c "router bgp $asn" -c "no neighbor $who bfd" >/dev/null
    log "BFD off for $who (frr-reload.py left it on)"
  done
}

# frr_check: the staged frr.conf is valid (`vtysh -C`), or the step dies naming why.
frr_check() {
  local checked
  checked=$(vtysh -C -f "$(staged "$FRR_CONF")" 2>&1) || die "staged frr.conf is invalid (vtysh -C): $checked"
}

# frr_converge (after frr_check): FRR's daemons file and frr.conf installed (readable by root
# and FRR's group: frr.conf may hold the BGP password), FRR started, restarted (a new daemons
# file) or reloaded (a new frr.conf: frr-reload.py applies what changed, the sessions stay up),
# and BFD turned off where the file turned it off.
frr_converge() {
  local restart=no reload=no
  if stage_install "$FRR_DAEMONS" 0640; then restart=yes; fi
  if stage_install "$FRR_CONF" 0640; then reload=yes; fi
  chgrp frr "$FRR_DAEMONS" "$FRR_CONF" # the daemons and frr-reload.py read them as frr
  service_converge frr "$restart" "$reload"
  frr_bfd_converge "$FRR_CONF"
}

# bgp_announced PEER VIP BFD: bgpd has announced VIP/32 to PEER (the router sends this node flows
# from then on; the first announcement after a session comes up waits out bgpd's 1 s coalesce
# time), and, with BFD (1), its BFD peer is up.
bgp_announced() {
  local peer=$1 vip=$2 bfd=$3
  vtysh -c "show bgp ipv4 unicast neighbors $peer advertised-routes json" 2>/dev/null \
    | grep -q "\"$vip/32\"" || return 1
  [ "$bfd" = 0 ] || vtysh -c "show bfd peers json" 2>/dev/null \
    | python3 -c 'import json, sys; sys.exit(not any(p.get("peer") == sys.argv[1] and p.get("status") == "up" for p in json.load(sys.stdin)))' "$peer"
}

# service_stop NAME: stopped (a clean stop: keepalived gives the VIP up, apache finishes requests).
service_stop() {
  local name=$1 pidfile
  if has_systemd; then
    systemctl stop "$name"
    return
  fi
  case "$name" in
    haproxy) pidfile=$HAPROXY_PIDFILE ;;
    keepalived) pidfile=$KEEPALIVED_PIDFILE ;;
    apache2) pidfile=$APACHE_PIDFILE ;;
    halab-banner) pidfile=$BANNER_PIDFILE ;;
    halab-haproxy-watch) pidfile=$WATCH_PIDFILE ;;
    halab-second-chance) pidfile=$SECOND_CHANCE_PIDFILE ;;
    frr)
      # its daemons, clients before zebra; zebra removes the routes it installed as it stops
      local d
      for d in bgpd bfdd; do service_stop_pid "$FRR_RUN_DIR/$d.pid" "$d"; done
      pidfile=$FRR_RUN_DIR/zebra.pid
      ;;
    *) die "service_stop: unknown $name" ;;
  esac
  service_stop_pid "$pidfile" "$name"
}

# service_stop_pid PIDFILE NAME: the process in PIDFILE stopped (SIGTERM, then a bounded wait).
service_stop_pid() {
  local pidfile=$1 name=$2
  if pid_alive "$pidfile"; then
    local pid
    pid=$(head -n 1 "$pidfile")
    kill -TERM "$pid"
    # Apache's own stop may take 10 s: its parent sends a child that has not exited SIGTERM
    # again at 3, 5 and 7 s, SIGKILL at 9 s, and gives up at 10 s. 20 s covers that on a busy
    # node (10 s did not, once in the pools lab); a failure names the processes left.
    wait_until 20 bash -c "! kill -0 $pid 2>/dev/null" \
      || die "$name did not stop in 20 s: $(ps -C "$name" -o pid=,ppid=,stat=,etime=,wchan:24= | tr -s ' \n' ' ;')"
  fi
  rm -f "$pidfile"
}

# unit_install PATH: a systemd unit or drop-in, only where systemd runs; succeeds if it changed.
UNITS_CHANGED=no
unit_install() {
  has_systemd || return 1
  stage_install "$1" 0644 || return 1
  UNITS_CHANGED=yes
}

# units_reload: systemd re-reads its units only when this step changed one. A daemon-reload
# re-runs every generator and re-parses every unit: seconds of CPU on a small or emulated node,
# taken from the haproxy and keepalived it is configuring (the VM lab's guests lost the VIP to
# their own check timing out while a step reloaded systemd).
units_reload() {
  [ "$UNITS_CHANGED" = yes ] || return 0
  systemctl daemon-reload
  UNITS_CHANGED=no
}

# unit_enable NAME: enabled at boot; `systemctl enable` only when it is not (for a unit with a
# SysV script beside it, as haproxy has, enable runs update-rc.d: ten seconds on an emulated CPU).
unit_enable() {
  systemctl is-enabled --quiet "$1" 2>/dev/null || systemctl enable --quiet "$1"
}

# service_off NAME: stopped, and not started at boot: a daemon this node must not run (a
# packaged Apache on a backend outside every HTTP service's pool). Says so only when it changes
# something; a daemon never installed here is already off.
service_off() {
  local name=$1
  if has_systemd; then
    if systemctl is-enabled --quiet "$name" 2>/dev/null; then
      systemctl disable --quiet "$name"
      log "disabled $name"
    fi
    if systemctl is-active --quiet "$name"; then
      systemctl stop "$name"
      log "stopped $name"
    fi
  elif direct_service "$name" running; then
    service_stop "$name"
    log "stopped $name"
  fi
}

# keepalived_test CONF: `keepalived -t` on CONF, before anything is installed. The scripts CONF
# names are read from this step's bundle where it stages them (copied into a root-only
# directory, as script security wants), so the new conf is checked with the new scripts, not
# with whatever an earlier run left in place. keepalived 2.2.x in config-test mode kills itself
# (SIGTERM, exit 143) after checking a track script as a non-root script_user, so the copy tested
# says root there; everything else is the file as deployed (a missing or unsafe script fails:
# exit 5).
keepalived_test() {
  local dir rc=0 path
  dir=$(mktemp -d /run/halab-keepalived-test.XXXXXX)
  local edits=(-E -e 's/^([[:space:]]*script_user)[[:space:]].*/\1 root/')
  while read -r path; do
    if [ -n "${HALAB_STAGE:-}" ] && [ -f "$HALAB_STAGE/root$path" ]; then
      install -m 0755 "$HALAB_STAGE/root$path" "$dir/${path##*/}"
      edits+=(-e "s#\"$path([ \"])#\"$dir/${path##*/}\\1#")
    fi
  done < <(grep -oE '^[[:space:]]*(script|notify[a-z_]*)[[:space:]]+"/[^" ]+' "$1" | grep -oE '/[^" ]+$' | sort -u)
  # A tracked file its writer has yet to create (the watcher starts after this test): keepalived
  # 2.2 ignores it with a warning, 2.3 (Debian 13) fails the test on it (realpath() error 2). A
  # stand-in that reads healthy ("0") tests the conf as it will run.
  while read -r path; do
    if [ ! -e "$path" ]; then
      echo 0 >"$dir/track-${path//\//_}"
      edits+=(-e "s#\"$path\"#\"$dir/track-${path//\//_}\"#")
    fi
  done < <(grep -oE '^[[:space:]]*file[[:space:]]+"/[^"]+"' "$1" | grep -oE '/[^"]+' | sort -u)
  sed "${edits[@]}" "$1" >"$dir/keepalived.conf"
  keepalived -t -f "$dir/keepalived.conf" || rc=$?
  rm -rf "$dir"
  return "$rc"
}
