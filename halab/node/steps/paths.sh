# shellcheck shell=bash
# shellcheck disable=SC2034 # every name is read by the scripts that source this file
# Every path on a node that ha-lb-lab names in more than one file, declared here once.
# - The steps source it (lib.sh does, from the bundle's stage) and say "$HAPROXY_CFG".
# - The core reads it (halab/node/paths.py) for the files a step places.
# - The node files and templates get it filled in when they are rendered: `@HAPROXY_CFG@` in a
#   file of halab/node/files/, `{{ paths.HAPROXY_CFG }}` in a template.
# One NAME=/absolute/path per line: no quotes, no expansion (Python parses this file too).
# tests/test_paths.py fails when a declared path is written anywhere else, or when a path a
# shipped file names is named by another file without being declared here.

# The node's library (halab/node/steps/library.sh, halab/core/step.py)
LIBRARY_DIR=/usr/local/lib/halab

# Both roles
SYSTEMD_RUNTIME_UNITS=/run/systemd/system
NETWORKD_CONF=/etc/systemd/networkd.conf.d/90-halab.conf

# A load balancer: TPROXY
LB_SYSCTL_CONF=/etc/sysctl.d/90-halab-lb.conf
TPROXY_BIN=/usr/local/sbin/halab-tproxy
TPROXY_UNIT=/etc/systemd/system/halab-tproxy.service
TPROXY_CONF=/etc/halab/tproxy.conf
SECOND_CHANCE_BIN=/usr/local/sbin/halab-second-chance
SECOND_CHANCE_UNIT=/etc/systemd/system/halab-second-chance.service
SECOND_CHANCE_PIDFILE=/run/halab-second-chance.pid
SECOND_CHANCE_LOG=/run/halab-second-chance.log

# A load balancer: haproxy
HAPROXY_CFG=/etc/haproxy/haproxy.cfg
HAPROXY_SECRETS=/etc/haproxy/halab-secrets.env
HAPROXY_NEW_SERVERS=/etc/haproxy/halab-new-servers.state
HAPROXY_DROPIN=/etc/systemd/system/haproxy.service.d/halab.conf
HAPROXY_STATE_BIN=/usr/local/sbin/halab-haproxy-state
HAPROXY_CTL_BIN=/usr/local/sbin/halab-haproxy-ctl
HAPROXY_RUN_DIR=/run/haproxy
HAPROXY_ADMIN_SOCK=/run/haproxy/admin.sock
HAPROXY_MASTER_SOCK=/run/haproxy/master.sock
HAPROXY_PIDFILE=/run/haproxy/haproxy.pid
HAPROXY_SERVER_STATE=/run/haproxy/server-state
IN_SERVICE_DIR=/var/lib/halab/in-service

# A load balancer: keepalived and the haproxy watcher it tracks
KEEPALIVED_CONF=/etc/keepalived/keepalived.conf
KEEPALIVED_CHECK=/etc/keepalived/halab-check-haproxy
KEEPALIVED_NOTIFY=/etc/keepalived/halab-notify
KEEPALIVED_HOOKS_BIN=/usr/local/sbin/halab-keepalived-hooks
KEEPALIVED_DROPIN=/etc/systemd/system/keepalived.service.d/halab.conf
KEEPALIVED_PIDFILE=/run/keepalived.pid
KEEPALIVED_LOG=/run/keepalived.log
VRRP_CONF=/etc/halab/vrrp.conf
VRRP_LOG=/var/log/halab-vrrp.log
VRRP_TEXTFILE=/var/lib/prometheus/node-exporter/halab_vrrp.prom
WATCH_BIN=/usr/local/sbin/halab-haproxy-watch
WATCH_CONF=/etc/halab/haproxy-watch.conf
WATCH_UNIT=/etc/systemd/system/halab-haproxy-watch.service
WATCH_DIR=/run/halab-watch
WATCH_HEALTH=/run/halab-watch/haproxy
WATCH_SERVING=/run/halab-watch/serving
WATCH_PIDFILE=/run/halab-haproxy-watch.pid

# A load balancer: the conf files of its waits and roll-out gates
JOIN_CONF=/etc/halab/join.conf
SERVING_CONF=/etc/halab/serving.conf
HANDOFF_CONF=/etc/halab/handoff.conf
DRAIN_CONF=/etc/halab/drain.conf
DRILL_LINK_PIDFILE=/run/halab-drill-link.pid
# haproxy or keepalived held down: systemd does not start it while HOLD_DIR/NAME exists
HOLD_DIR=/run/halab-hold

# A backend: the gateway via the VIP
BACKEND_SYSCTL_CONF=/etc/sysctl.d/90-halab-backend.conf
ROUTES_CONF=/etc/halab/routes.conf
ROUTES_BIN=/usr/local/sbin/halab-routes
ROUTES_UNIT=/etc/systemd/system/halab-routes.service

# A backend: Apache (its web services) and halab-banner (its TCP services)
APACHE_DIR=/etc/apache2
APACHE_ENVVARS=/etc/apache2/envvars
APACHE_PORTS_CONF=/etc/apache2/ports.conf
APACHE_SITE=/etc/apache2/sites-available/halab.conf
APACHE_PIDFILE=/run/apache2/apache2.pid
SNAKEOIL_CERT=/etc/ssl/certs/ssl-cert-snakeoil.pem
WEB_ROOT=/var/www/halab
INDEX_PAGE=/var/www/halab/index.shtml
BANNER_BIN=/usr/local/sbin/halab-banner
BANNER_CONF=/etc/halab/banner.conf
BANNER_UNIT=/etc/systemd/system/halab-banner.service
BANNER_PIDFILE=/run/halab-banner.pid

# A load balancer in ecmp mode, and the lab's router: FRR (bgpd, bfdd, zebra)
FRR_CONF=/etc/frr/frr.conf
FRR_DAEMONS=/etc/frr/daemons
FRR_RUN_DIR=/var/run/frr
WATCH_ECMP_DROPIN=/etc/systemd/system/halab-haproxy-watch.service.d/50-halab-ecmp.conf
# ecmp mode: whether this node announces the VIP, for node-exporter's textfile collector (a link
# to the file the watcher writes in its own directory)
BGP_TEXTFILE=/var/lib/prometheus/node-exporter/halab_bgp.prom
WATCH_ANNOUNCED=/run/halab-watch/halab_bgp.prom
