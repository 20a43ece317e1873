#!/usr/bin/env bash
# The lab's router in ecmp mode: forwards, hashes each flow by its addresses and ports over the
# equal-cost routes to the VIP, and runs FRR with a session to every load balancer. Validates
# the staged frr.conf (`vtysh -C`) before it changes anything; a changed one is applied by
# frr-reload.py (what changed only).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
need_cmd vtysh sysctl
frr_check

sysctl -qw net.ipv4.ip_forward=1
# Each flow hashed by its own addresses, protocol and ports (policy 3, fields 0x37), so that the
# flows of one client spread over the load balancers, each flow on one of them. Not policy 1:
# it takes a packet's L4 hash as it came (skb->l4_hash), and a packet from a local namespace's
# socket (a veth) carries that socket's random txhash, which TCP draws again at each
# retransmission timeout: a flow would change load balancer when it retransmits.
sysctl -qw net.ipv4.fib_multipath_hash_fields=0x0037
sysctl -qw net.ipv4.fib_multipath_hash_policy=3
# the load balancers are on the same LAN as the clients it routes back to them: no redirects
sysctl -qw net.ipv4.conf.all.send_redirects=0
frr_converge
log "bgpd running ($(head -n 1 "$FRR_RUN_DIR/bgpd.pid"))"
