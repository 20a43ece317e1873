"""The step scripts: shellcheck-clean, idempotent, and validating before they change anything.

Each runs from its bundle inside throw-away namespace nodes (halab/drivers/netns/node.py), exactly as
the Pulumi path pipes it to `sudo bash -s` on a VM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, STACKS, need_root_and

from halab.core import config, plan, render, stackfile
from halab.core.model import Credentials
from halab.core.roles import load_balancer
from halab.core.step import LIBRARY_DIR, Step, library_step
from halab.drivers.netns.node import NsNode, veth
from halab.node import FILES as NODE_FILES
from halab.node import STEPS as NODE_STEPS
from halab.node.paths import PATHS

CREDS = Credentials("s3cret", "stats-secret-123")
LAB = config.parse({})

# Everything a step may change, as text: rules, routes, sysctls, files, daemons.
SNAPSHOT = rf"""
echo '## iptables'; iptables-save | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]//'
echo '## rules'; ip -4 rule
echo '## routes'; ip -4 route show table all | grep -v ' proto kernel' | sort
echo '## sysctl'; sysctl net.ipv4.ip_forward net.ipv4.ip_nonlocal_bind net.ipv4.conf.all.send_redirects \
  net.ipv4.conf.all.accept_redirects net.ipv4.conf.eth0.send_redirects net.ipv4.conf.eth0.accept_redirects
echo '## files'
for d in /etc/haproxy /etc/keepalived /etc/sysctl.d /usr/local/sbin /etc/halab {PATHS["APACHE_DIR"]} \
  {PATHS["WEB_ROOT"]}; do
  [ -d "$d" ] && find "$d" \( -type f -o -type l \) -printf '%p %m %l\n' | sort
done
find /etc/haproxy /etc/keepalived /etc/halab {PATHS["WEB_ROOT"]} /usr/local/sbin -type f \
  -exec sha256sum {{}} + 2>/dev/null | sort
echo '## daemons'
for f in {PATHS["HAPROXY_PIDFILE"]} {PATHS["KEEPALIVED_PIDFILE"]} {PATHS["APACHE_PIDFILE"]} {PATHS["BANNER_PIDFILE"]} \
  {PATHS["WATCH_PIDFILE"]}; do
  [ -f "$f" ] && echo "$f $(cat "$f")"
done
true
"""


def _shell_scripts() -> list:
    def is_shell(p) -> bool:
        first = p.read_text(errors="ignore").split("\n", 1)[0]
        return first.startswith("#!") and first.endswith(("bash", "sh")) or first == "# shellcheck shell=bash"

    trees = (ROOT / "scripts", ROOT / "halab" / "node", ROOT / "components")
    found = sorted(p for t in trees for p in t.rglob("*") if p.is_file() and is_shell(p)) + [ROOT / ".ci/run"]
    assert len(found) >= 12, found  # steps, node scripts, lib.sh: a glob that finds none must not pass
    return found


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script):
    p = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert p.returncode == 0, p.stdout


@pytest.fixture
def nodes():
    need_root_and("haproxy", "keepalived", "apache2ctl", "iptables", "ping", "unshare", "nsenter", "setpriv")
    made: list[NsNode] = []

    def make(name: str) -> NsNode:
        n = NsNode.create(f"halab-st-{name}", hostname=name)
        made.append(n)
        return n

    yield make
    for n in made:
        n.destroy()


def run_twice(node: NsNode, steps) -> tuple[str, str, list[str]]:
    outputs = []
    for st in steps:
        outputs.append(node.run_bundle(st.bundle()).stdout)
    first = node.run(SNAPSHOT).stdout
    second_out = [node.run_bundle(st.bundle()).stdout for st in steps]
    return first, node.run(SNAPSHOT).stdout, second_out


def test_load_balancer_steps_are_idempotent(nodes):
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    lb.run("ip addr add 192.168.69.111/24 dev eth0")
    steps = plan.host_steps(LAB, LAB.load_balancers[0], CREDS)
    first, second, second_out = run_twice(lb, steps)
    assert first == second
    pp = LAB.packet_path
    assert first.count("-j DIVERT") == 1 and first.count(f"fwmark {pp.divert_mark:#x} lookup {pp.divert_table}") == 1
    assert PATHS["HAPROXY_PIDFILE"] in first and PATHS["KEEPALIVED_PIDFILE"] in first
    for st, out in zip(steps, second_out, strict=True):
        assert not any(w in out for w in ("installed /", "starting", "reloading", "restarting")), f"{st.name}: {out}"
    # haproxy runs unprivileged, with exactly the capabilities transparent mode needs
    status = lb.run(f"cat /proc/$(cat {PATHS['HAPROXY_PIDFILE']})/status").stdout
    assert "Uid:\t" + lb.run("id -u haproxy").stdout.strip() in status
    assert "CapEff:\t0000000000043400" in status  # net_bind_service, net_admin, net_raw, sys_chroot


def wired_backend(nodes, lab, backend) -> tuple[NsNode, NsNode]:
    """A backend node as cloud-init leaves it (its address, the hypervisor as gateway), cabled
    to a node that holds the VIP."""
    be, gw = nodes(backend.name), nodes("vip")
    veth(be, "eth0", gw, "eth0")
    net = lab.network
    be.run(f"ip addr add {backend.address}/{net.prefix} dev eth0 && ip route add default via {net.gateway}")
    gw.run(f"ip addr add {lab.vip}/{net.prefix} dev eth0")
    return be, gw


def test_backend_steps_are_idempotent(nodes):
    be, gw = wired_backend(nodes, LAB, LAB.backends[0])
    steps = plan.host_steps(LAB, LAB.backends[0], CREDS)
    first, second, second_out = run_twice(be, steps)
    assert first == second
    assert "default via 192.168.69.110 dev eth0 proto 250" in first
    assert "192.168.69.1 via 192.168.69.110 dev eth0 proto 250" in first
    assert "via 192.168.69.1 " not in first  # the cloud-init gateway is gone
    for st, out in zip(steps, second_out, strict=True):
        assert not any(w in out for w in ("installed /", "starting", "reloading", "apache:")), f"{st.name}: {out}"
    page = gw.run("curl -s --max-time 5 http://192.168.69.106/").stdout
    assert page.strip() == "backend=www1 client=192.168.69.110 port=80"


def test_invalid_haproxy_config_changes_nothing(nodes):
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    for name in ("library", "sysctl", "tproxy", "secrets", "haproxy"):
        lb.run_bundle(steps[name].bundle())
    before = lb.run(SNAPSHOT).stdout
    cfg_path, cfg = steps["haproxy"].files[0]
    broken = dataclasses.replace(
        steps["haproxy"], files=((cfg_path, cfg.replace("balance leastconn", "balance nonsense")),)
    )
    p = lb.run_bundle(broken.bundle(), check=False)
    assert p.returncode != 0 and "haproxy.cfg is invalid" in p.stderr
    assert lb.run(SNAPSHOT).stdout == before


def test_invalid_keepalived_config_changes_nothing(nodes):
    """keepalived's step validates everything it stages before it installs anything: with a
    keepalived.conf that `keepalived -t` refuses, the new check script and watcher beside it stay
    uninstalled, and no daemon is started again."""
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    for name in ("library", "sysctl", "tproxy", "secrets", "haproxy", "keepalived"):
        lb.run_bundle(steps[name].bundle())
    before = lb.run(SNAPSHOT).stdout
    assert PATHS["KEEPALIVED_PIDFILE"] in before and PATHS["WATCH_PIDFILE"] in before

    def changed(path: str, text: str) -> str:
        if path == PATHS["KEEPALIVED_CONF"]:
            return text.replace("virtual_router_id 100", "virtual_router_id 300")  # out of range
        if path in (PATHS["KEEPALIVED_CHECK"], PATHS["WATCH_BIN"]):
            return text + "\n# a new version\n"
        return text

    step = steps["keepalived"]
    broken = dataclasses.replace(step, files=tuple((p, changed(p, t)) for p, t in step.files))
    assert broken.files != step.files
    p = lb.run_bundle(broken.bundle(), check=False)
    assert p.returncode != 0 and "keepalived.conf is invalid" in p.stderr, p.stderr
    assert lb.run(SNAPSHOT).stdout == before
    assert lb.run("ls /run | grep -c halab-keepalived-test || true").stdout.strip() == "0"  # no leftover


def test_a_first_keepalived_start_beside_a_vip_holder_waits_only_for_servers_on_their_way_up(nodes):
    """keepalived's first start while a peer holds the VIP waits until this haproxy serves (a
    replaced guest must not preempt into unchecked servers), but not when its checks have
    settled with nothing on its way UP: on the first `up` the backends are configured after the
    load balancers, and the VM lab waited out the whole bound (46 s) for them on every `up`."""
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    lb.run("ip addr add 192.168.69.111/24 dev eth0")
    peer.run(f"ip addr add {LAB.vip}/24 dev eth0")  # the peer holds the VIP; no backend answers
    web = ["python3", "-m", "http.server", "-b", "0.0.0.0", "-d", "/tmp", "80"]
    subprocess.Popen(peer.argv(web), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: lb.run(f"timeout 1 bash -c ': </dev/tcp/{LAB.vip}/80'", check=False).returncode == 0, 10)
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    for name in ("library", "sysctl", "tproxy", "secrets", "haproxy"):
        lb.run_bundle(steps[name].bundle())
    started = time.monotonic()
    p = lb.run_bundle(steps["keepalived"].bundle())
    took = time.monotonic() - started
    assert "a peer holds the VIP: joining, no server on its way UP here" in p.stdout, p.stdout + p.stderr
    assert "warning" not in p.stderr and took < LAB.serving_within / 2, (took, p.stderr)


def test_systemd_is_reloaded_and_a_unit_enabled_only_when_needed(tmp_path):
    """The VM lab's guests lost the VIP while every step ran `systemctl daemon-reload` and
    `systemctl enable` (seconds of CPU each): lib.sh reloads systemd only when the step changed a
    unit, and enables a unit only when it is not. Under a systemctl that logs its calls."""
    bin_dir, stage, unit = tmp_path / "bin", tmp_path / "stage", tmp_path / "units" / "demo.service"
    bin_dir.mkdir()
    (stage / "root" / str(unit).lstrip("/")).parent.mkdir(parents=True)
    (stage / "root" / str(unit).lstrip("/")).write_text("[Service]\nExecStart=/bin/true\n")
    log = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(
        f'#!/bin/sh\necho "$*" >>{log}\n'
        f'case "$1" in is-enabled) test -e {tmp_path}/enabled ;; enable) touch {tmp_path}/enabled ;; esac\n'
    )
    fake.chmod(0o755)
    lib = NODE_STEPS / "lib.sh"  # sourced where it is: it sources paths.sh beside it
    step = (
        f'. "{lib}"\nhas_systemd() {{ true; }}\nrestart=no\n'
        f"if unit_install {unit}; then restart=yes; fi\nservice_converge demo $restart no\n"
    )

    def run() -> list[str]:
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HALAB_STAGE": str(stage)}
        subprocess.run(["bash", "-c", "set -euo pipefail\n" + step], env=env, check=True, capture_output=True)
        return log.read_text().split("\n")[:-1]

    assert run() == [
        "daemon-reload", "is-enabled --quiet demo", "enable --quiet demo",
        "is-active --quiet demo", "restart demo", "is-active --quiet demo",
    ]  # fmt: skip
    # again, nothing changed: neither a reload nor an enable
    assert run() == ["is-enabled --quiet demo", "is-active --quiet demo", "is-active --quiet demo"]
    # a drill's hold left behind (a verifier killed mid-drill) would make systemd skip the start
    held = tmp_path / "hold"
    held.mkdir()
    (held / "demo").touch()
    step = step.replace("restart=no\n", f"restart=no\nHOLD_DIR={held}\n")
    assert run() == ["is-enabled --quiet demo", "is-active --quiet demo", "is-active --quiet demo"]
    assert not (held / "demo").exists()


def test_gateway_step_refuses_a_vip_that_does_not_answer(nodes):
    be, other = nodes("www1"), nodes("other")
    veth(be, "eth0", other, "eth0")
    be.run("ip addr add 192.168.69.106/24 dev eth0 && ip route add default via 192.168.69.1")
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.backends[0], CREDS)}
    be.run_bundle(steps["library"].bundle())
    gateway = steps["gateway"]
    before = be.run(SNAPSHOT).stdout
    p = be.run_bundle(gateway.bundle(), check=False, env={"HALAB_VIP_WAIT": "2"})
    assert p.returncode != 0 and "does not answer" in p.stderr
    assert be.run(SNAPSHOT).stdout == before
    assert "default via 192.168.69.1 " in before


def test_backend_with_tcp_services_is_idempotent(nodes):
    """The TCP banner (SMTP- and IMAP-like services) and the PROXY protocol / X-Forwarded-For
    virtual hosts: installed once, unchanged by a second run, answering with the client's address."""
    lab = config.parse(stackfile.load_stack_file(str(STACKS["lab3"])))
    be, gw = wired_backend(nodes, lab, lab.backends[0])
    steps = plan.host_steps(lab, lab.backends[0], CREDS)
    first, second, second_out = run_twice(be, steps)
    assert first == second
    assert PATHS["BANNER_PIDFILE"] in first
    for st, out in zip(steps, second_out, strict=True):
        assert not any(w in out for w in ("installed /", "starting", "reloading", "restarting")), f"{st.name}: {out}"
    banner = gw.run("exec 3<>/dev/tcp/10.77.0.21/25; head -n 1 <&3").stdout
    assert banner.startswith("220 backend=app1 client=10.77.0.10 port=25"), banner
    # enough SMTP for haproxy's smtpchk: each line answered 250, QUIT answered 221 and closed
    smtp = gw.run("exec 3<>/dev/tcp/10.77.0.21/25; printf 'HELO lb\\r\\nQUIT\\r\\n' >&3; timeout 5 cat <&3").stdout
    assert smtp.split("\n")[1:] == ["250 halab", "221 bye", ""], smtp  # and closed: cat ended before 5 s
    proxied = gw.run(
        "exec 3<>/dev/tcp/10.77.0.21/143; printf 'PROXY TCP4 203.0.113.7 10.77.0.10 5555 143\\r\\n' >&3; head -n 1 <&3"
    ).stdout
    assert proxied.startswith("220 backend=app1 client=203.0.113.7 port=143"), proxied
    # the banner runs unprivileged
    assert be.run(f"ps -o user= -p $(cat {PATHS['BANNER_PIDFILE']})").stdout.strip() == "nobody"


def test_daemons_get_the_same_privileges_with_and_without_systemd():
    """haproxy's capabilities are listed twice, in the systemd drop-in (VMs) and in lib.sh
    (the lab's setpriv): the two lists must not drift apart."""
    import re

    unit = (NODE_FILES / "haproxy-halab.conf").read_text()
    lib = (NODE_STEPS / "lib.sh").read_text()
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        systemd = set(re.search(rf"^{key}=(.*)$", unit, re.M).group(1).lower().replace("cap_", "").split())
        direct = set(re.search(r"^HAPROXY_CAPS=(\S+)", lib, re.M).group(1).split(","))
        assert systemd == direct, (key, systemd, direct)
    banner = (NODE_FILES / "halab-banner.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in banner
    assert re.search(r'start_unprivileged "\$BANNER_PIDFILE" \S+ net_bind_service', lib)


def drill_bundle(*args: str) -> str:
    return Step("node", "drill", "drill.sh", args).bundle()


def test_link_cut_restores_itself_or_on_request(nodes):
    """A drill's link cut returns before the cut (over SSH the node may be reachable through that
    link only), and the node brings the link and its default route back by itself; `link-up`
    restores at once and cancels the pending restore."""
    node, peer = nodes("lb1"), nodes("peer")
    veth(node, "eth0", peer, "eth0")
    node.run("ip addr add 192.168.69.111/24 dev eth0 && ip route add default via 192.168.69.1")

    def state() -> str:
        return node.run("ip -br link show eth0 | awk '{print $2}'; ip -4 route show default").stdout

    up = state()
    assert up.startswith("UP") and "default via 192.168.69.1" in up
    node.run_bundle(drill_bundle("link-down", "eth0", "0.2", "1", "192.168.69.1"))
    assert state() == up  # not yet: the call returned first
    time.sleep(0.6)
    assert state().startswith("DOWN") and "default" not in state()  # the route went with the link
    time.sleep(1.5)
    assert state() == up  # restored by the node itself
    node.run_bundle(drill_bundle("link-down", "eth0", "0", "30", "192.168.69.1"))
    time.sleep(0.5)
    assert state().startswith("DOWN")
    node.run_bundle(drill_bundle("link-up", "eth0", "192.168.69.1"))
    assert state() == up
    assert node.run(f"test -e {PATHS['DRILL_LINK_PIDFILE']}", check=False).returncode == 1  # timer cancelled
    assert node.run("pgrep -f 'sleep 30'", check=False).returncode == 1


def test_hang_stops_every_process_of_the_name_in_its_node_only_and_resume_continues_them(nodes):
    """The hang drills (haproxy hung, a backend hung) SIGSTOP every process of a name on one
    node, master and workers alike, and `resume` undoes it; a node beside it with the same
    daemon is untouched (each node has its own PID namespace)."""
    a, b = nodes("www1"), nodes("www2")
    for node in (a, b):  # a process whose name is apache2, as ps and pgrep see it
        node.run("install -D -m 0755 /bin/sleep /run/stand-in/apache2")
        node.run("for i in 1 2 3; do setsid /run/stand-in/apache2 300 </dev/null >/dev/null 2>&1 & done; sleep 0.2")

    def states(node: NsNode) -> list[str]:
        return node.run("ps -C apache2 -o stat=").stdout.split()

    assert len(states(a)) == 3 and not any(x.startswith("T") for x in states(a) + states(b))
    a.run_bundle(drill_bundle("hang", "apache2"))
    assert len(states(a)) == 3 and all(x.startswith("T") for x in states(a)), states(a)
    assert not any(x.startswith("T") for x in states(b)), states(b)
    a.run_bundle(drill_bundle("resume", "apache2"))
    assert len(states(a)) == 3 and not any(x.startswith("T") for x in states(a)), states(a)
    p = a.run_bundle(drill_bundle("hang", "haproxy"), check=False)
    assert p.returncode != 0 and "no haproxy process here" in p.stderr


def test_the_drills_crash_is_held_down_by_the_installed_dropins(tmp_path):
    """drill.sh's kill keeps a crashed haproxy or keepalived down with a hold file, which only
    the installed drop-ins' ExecCondition honours (systemd runs it for an automatic restart too;
    the VM lab's kill drills prove that on systemd). Here, under a systemctl that logs its calls
    and plays the unit: the hold is in place before the first signal, no daemon-reload is run,
    a unit without the condition is refused before any signal, and `start` lifts the hold
    before it starts the unit."""
    need_root_and("unshare", "mount")
    dropins = {Path(dest).parent.name: text for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)
               for dest, text in s.files if ".service.d/" in dest}  # fmt: skip
    hold = f"{PATHS['HOLD_DIR']}/haproxy"
    for unit in ("haproxy", "keepalived"):
        conditions = re.findall(r"^ExecCondition=(.*)$", dropins[f"{unit}.service.d"], re.M)
        assert conditions == [f"/usr/bin/test ! -e {PATHS['HOLD_DIR']}/{unit}"], (unit, conditions)
    condition = re.search(r"^ExecCondition=(.*)$", dropins["haproxy.service.d"], re.M)[1]
    bin_dir, log, state = tmp_path / "bin", tmp_path / "calls", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (bin_dir / "systemctl").write_text(
        "#!/bin/bash\n"
        f'echo "$* hold=$(test -e {hold} && echo yes || echo no)" >>{log}\n'
        'case "$1" in\n'
        f"  show) test -e {state}/conditioned && echo '{{ path=/usr/bin/test ; argv[]={condition} ; }}' ;;\n"
        f"  is-active) exec test ! -e {state}/down ;;\n"  # running until SIGKILLed
        f'  kill) [ "$2" = --signal=KILL ] && touch {state}/down ;;\n'
        f"  start) {condition} && rm -f {state}/down ;;\n"  # what ExecCondition does
        "esac\n"
        "exit 0\n"
    )
    (bin_dir / "systemctl").chmod(0o755)

    drill = NODE_STEPS / "drill.sh"

    def in_own_run(script: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        """`script` with a /run of its own (a tmpfs in a private mount namespace): systemd's
        marker in it, and the hold; the calls systemctl saw."""
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HALAB_STEP": "drill"}
        own_run = f"mount -t tmpfs tmpfs /run && mkdir -p {PATHS['SYSTEMD_RUNTIME_UNITS']} && "
        argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", own_run + script]
        p = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        return p, log.read_text().splitlines()

    kill = f"bash {drill} kill haproxy; rc=$?; ls {PATHS['HOLD_DIR']} 2>/dev/null; exit $rc"
    p, calls = in_own_run(kill)  # a unit without the condition: refused before any signal
    assert p.returncode != 0 and "its unit has no hold" in p.stderr, p.stderr
    assert not any(c.startswith("kill") for c in calls) and "haproxy" not in p.stdout, calls

    (state / "conditioned").touch()
    p, calls = in_own_run(kill)
    assert p.returncode == 0, p.stderr
    signals = [c for c in calls if c.startswith("kill")]
    assert signals == ["kill --signal=STOP haproxy hold=yes", "kill --signal=KILL haproxy hold=yes"], calls
    assert not any("daemon-reload" in c for c in calls), calls
    assert p.stdout.splitlines()[-1] == "haproxy", p.stdout  # the hold stays after the drill

    # `start` lifts the hold before it starts the unit (set up again: each call has a fresh /run)
    p, calls = in_own_run(f"mkdir -p {PATHS['HOLD_DIR']} && touch {hold} && bash {drill} start haproxy")
    assert p.returncode == 0 and "haproxy was held down by a drill" in p.stdout, p.stdout + p.stderr
    assert "start haproxy hold=no" in calls and not (state / "down").exists(), calls


@pytest.fixture
def stand_in_haproxy(tmp_path):
    """A process in haproxy's place: its pidfile, and haproxy's health frontend (monitor-uri,
    200 on /halab-health; /halab-serving 503 while tmp_path/no-server exists, or once when
    tmp_path/no-server-once does, else 200) on a loopback port; (process, port, pidfile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import http.server as h, os\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        if self.path == '/halab-serving':\n"
            f"            once = {str(tmp_path / 'no-server-once')!r}\n"
            "            no = os.path.exists(once)\n"
            "            if no:\n"
            "                os.unlink(once)\n"
            f"            self.send_response(503 if no or os.path.exists({str(tmp_path / 'no-server')!r}) else 200)\n"
            "        else:\n"
            "            self.send_response(200 if self.path == '/halab-health' else 404)\n"
            "        self.end_headers()\n"
            "    def log_message(self, *a): pass\n"
            f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n",
        ]
    )
    pidfile = tmp_path / "haproxy.pid"
    pidfile.write_text(f"{server.pid}\n")
    with socket.socket() as probe:  # serving before the test starts
        assert wait_for(lambda: probe.connect_ex(("127.0.0.1", port)) == 0, 5)
    yield server, port, pidfile
    server.kill()
    server.wait()


def wait_for(pred, seconds: float) -> float | None:
    """Seconds until pred() holds, or None past the bound."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def shipped(name: str, where: Path) -> Path:
    """A node file as it ships (its node paths filled in: render.node_file), in `where`."""
    f = where / name
    f.write_text(render.node_file(name))
    f.chmod(0o755)
    return f


def start_watch(tmp_path: Path, port: int, pidfile: Path, period: float, fall: int, grace: float = 0):
    """halab-haproxy-watch on the stand-in (0.3 s timeout), its reloads marked by
    tmp_path/server-state, its serving verdict (asked every 0.1 s, 2 noes to fall) in
    tmp_path/serving; (process, verdict(want) -> bool)."""
    conf, state = tmp_path / "watch.conf", tmp_path / "state"
    conf.write_text(
        f"PERIOD={period}\nTIMEOUT=0.3\nFALL={fall}\nHEALTH_PORT={port}\nPIDFILE={pidfile}\n"
        f"RELOAD_GRACE={grace}\nSERVER_STATE={tmp_path / 'server-state'}\nSERVING_PERIOD=0.1\nSERVING_FALL=2\n"
    )
    watcher = str(shipped("halab-haproxy-watch", tmp_path))
    watch = subprocess.Popen([sys.executable, watcher, str(conf), str(state), str(tmp_path / "serving")])
    return watch, lambda want: state.exists() and state.read_text().strip() == want


def test_haproxy_watch_says_whether_every_service_has_a_server_up(tmp_path, stand_in_haproxy):
    """The second verdict, serving (keepalived's haproxy_serving track, a negative weight):
    1 once haproxy's /halab-serving says 503 twice in a row (a service with no server UP here),
    0 at its first 200. No answer (a hang) leaves it as it is, the health verdict says the
    rest; so does a 503 within a reload's grace (the old process counts no server as it stops)."""
    server, port, pidfile = stand_in_haproxy
    watch, healthy = start_watch(tmp_path, port, pidfile, period=0.1, fall=2, grace=2.0)
    serving = tmp_path / "serving"

    def says(want: str) -> bool:
        return serving.exists() and serving.read_text().strip() == want

    try:
        assert wait_for(lambda: says("0"), 5) is not None, "every service served: 0"
        once = tmp_path / "no-server-once"
        once.touch()  # one no, as a reload's old process may say: not enough
        assert wait_for(lambda: not once.exists(), 2) is not None, "the watcher never asked"
        assert wait_for(lambda: says("1"), 0.5) is None, "one no lowered the priority (SERVING_FALL is 2)"
        (tmp_path / "no-server").touch()
        assert wait_for(lambda: says("1"), 2) is not None, "no server UP, two noes in a row: 1"
        assert healthy("0"), "alive all along: the health verdict stays"
        (tmp_path / "no-server").unlink()
        assert wait_for(lambda: says("0"), 1) is not None, "served again: 0 at the first yes"
        server.send_signal(signal.SIGSTOP)  # a hang: no answer
        (tmp_path / "no-server").touch()
        assert wait_for(lambda: healthy("1"), 2) is not None
        assert says("0"), "a hang changed the serving verdict: that is the health file's to say"
        server.send_signal(signal.SIGCONT)
        (tmp_path / "server-state").write_text("1\n")  # a reload begins: its noes are forgiven
        assert wait_for(lambda: says("1"), 1) is None, "a reload's 503 lowered the priority"
        os.utime(tmp_path / "server-state", (time.time() - 5, time.time() - 5))  # past the grace
        assert wait_for(lambda: says("1"), 2) is not None, "no server UP past a reload: 1"
    finally:
        server.send_signal(signal.SIGCONT)
        watch.kill()
        watch.wait()


def test_haproxy_watch_sees_a_hung_haproxy_not_only_a_dead_one(tmp_path, stand_in_haproxy):
    """The watcher's verdict follows haproxy's answers: a process that keeps its pidfile and its
    listening socket but answers nothing (SIGSTOP: a hang) is unhealthy within FALL x (TIMEOUT +
    PERIOD), and healthy again once it answers."""
    server, port, pidfile = stand_in_haproxy
    watch, verdict = start_watch(tmp_path, port, pidfile, period=0.1, fall=2)
    try:
        assert wait_for(lambda: verdict("0"), 5) is not None, "a serving haproxy is healthy"
        server.send_signal(signal.SIGSTOP)
        took = wait_for(lambda: verdict("1"), 2)
        assert took is not None and took < 2 * (0.3 + 0.1) + 0.2, f"a hung haproxy seen after {took}"
        server.send_signal(signal.SIGCONT)
        assert wait_for(lambda: verdict("0"), 2) is not None, "healthy again once it answers"
        server.kill()
        server.wait()
        assert wait_for(lambda: verdict("1"), 2) is not None, "a dead haproxy is unhealthy"
    finally:
        watch.kill()
        watch.wait()


def test_haproxy_watch_forgives_a_reload_its_grace_long_not_an_exit(tmp_path, stand_in_haproxy):
    """A reload is not a hang: misses within RELOAD_GRACE of the server-state file's write (each
    reload's first act) leave haproxy healthy; past the grace, the same silence is a hang. An
    exit mid-reload is unhealthy at once. (On emulated guests a reload starved the old worker's
    answers past FALL misses: a load balancer went FAULT for a reload that kept every connection.)"""
    server, port, pidfile = stand_in_haproxy
    watch, verdict = start_watch(tmp_path, port, pidfile, period=0.1, fall=2, grace=2.0)
    try:
        assert wait_for(lambda: verdict("0"), 5) is not None, "a serving haproxy is healthy"
        (tmp_path / "server-state").write_text("1\n")  # a reload begins
        server.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        # FALL misses take 0.8 s: still healthy at 1.5 s, mid-grace
        assert wait_for(lambda: verdict("1"), 1.5) is None, "a reload's misses made haproxy unhealthy"
        took = wait_for(lambda: verdict("1"), 2)
        assert took is not None and 1.9 < time.monotonic() - t0 < 2.8, f"a hang past the grace seen after {took}"
        server.send_signal(signal.SIGCONT)
        assert wait_for(lambda: verdict("0"), 2) is not None, "healthy again once it answers"
        (tmp_path / "server-state").write_text("1\n")  # another reload, and haproxy dies in it
        server.kill()
        server.wait()
        took = wait_for(lambda: verdict("1"), 1)
        assert took is not None and took < 0.5, f"haproxy's exit mid-reload seen after {took}"
    finally:
        watch.kill()
        watch.wait()


def test_haproxy_watch_sees_haproxy_exit_as_it_happens_not_at_its_next_poll(tmp_path, stand_in_haproxy):
    """haproxy's exit needs no poll: with a 2 s period and 3 misses to fail (6 s by polling),
    the watcher writes 1 within a fraction of a second of the kill (a pidfd on the master named
    in the pidfile); a new haproxy in the pidfile is followed, and healthy."""
    server, port, pidfile = stand_in_haproxy
    watch, verdict = start_watch(tmp_path, port, pidfile, period=2, fall=3)
    try:
        assert wait_for(lambda: verdict("0"), 5) is not None, "a serving haproxy is healthy"
        time.sleep(0.3)  # mid-period: the next poll is 1.7 s away
        server.kill()
        server.wait()
        took = wait_for(lambda: verdict("1"), 3)
        assert took is not None and took < 0.5, f"haproxy's exit seen after {took}"
        again = subprocess.Popen(server.args)  # the same stand-in, restarted: a new master
        try:
            pidfile.write_text(f"{again.pid}\n")
            assert wait_for(lambda: verdict("0"), 8) is not None, "the new haproxy is followed"
        finally:
            again.kill()
            again.wait()
    finally:
        watch.kill()
        watch.wait()


def test_keepalived_script_sees_a_hung_haproxy_and_a_port_not_listening(stand_in_haproxy, tmp_path):
    """The 1 s safety net (halab-check-haproxy) judges the same way: healthy while haproxy
    answers and every given port listens; a hang fails it within its 0.5 s read, whatever the
    pidfile and the sockets say; a port nobody listens on fails it; so does a dead process."""
    server, port, pidfile = stand_in_haproxy
    check = safety_net(tmp_path, port, pidfile)
    assert check(port)[0] == 0
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        unbound = free.getsockname()[1]  # bound, not listening: no frontend there
        assert check(port, unbound)[0] == 1
    server.send_signal(signal.SIGSTOP)
    try:
        rc, took = check(port)
        assert rc == 1 and took < 2, f"a hung haproxy: exit {rc} after {took:.2f} s"
    finally:
        server.send_signal(signal.SIGCONT)
    assert check(port)[0] == 0
    server.kill()
    server.wait()
    assert check(port)[0] == 1


def safety_net(tmp_path, port: int, pidfile, grace: int = 10):
    """halab-check-haproxy as keepalived runs it, against the stand-in: check(*ports) gives its
    exit status and how long it took; its server-state file is tmp_path/server-state."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HALAB_HAPROXY_PIDFILE": str(pidfile),
        "HALAB_HAPROXY_SERVER_STATE": str(tmp_path / "server-state"),
    }
    script = shipped("halab-check-haproxy", tmp_path)

    def check(*ports: int) -> tuple[int, float]:
        t0 = time.monotonic()
        p = subprocess.run(
            [str(script), str(port), str(grace), *map(str, ports)],
            env=env, capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return p.returncode, time.monotonic() - t0

    return check


def test_keepalived_script_forgives_a_reload_its_grace_long_not_a_dead_haproxy(stand_in_haproxy, tmp_path):
    """The safety net forgives a reload as the watcher does: a haproxy that does not answer
    within RELOAD_GRACE of the server-state file's write passes; the same silence past the grace
    fails, and so does a dead master mid-reload. (Without the grace this script, two misses 2 s
    apart, put the VM lab's master in FAULT during a reload on CI's slower host.)"""
    server, port, pidfile = stand_in_haproxy
    check = safety_net(tmp_path, port, pidfile, grace=5)
    state = tmp_path / "server-state"
    server.send_signal(signal.SIGSTOP)
    try:
        assert check(port)[0] == 1, "a hang with no reload fails"
        state.write_text("1\n")  # a reload begins
        assert check(port)[0] == 0, "a reload's miss failed the check"
        os.utime(state, (time.time() - 6, time.time() - 6))  # began 6 s ago: past the grace
        assert check(port)[0] == 1, "a hang past the grace passed"
    finally:
        server.send_signal(signal.SIGCONT)
    state.write_text("1\n")
    server.kill()
    server.wait()
    assert check(port)[0] == 1, "a dead haproxy mid-reload passed"


def test_a_backend_moved_out_of_every_pool_stops_serving(nodes):
    """Pools change: a backend that served web and mail (every service) is then left out of
    every pool. Its web and tcp steps stop Apache and the banner, so its ports refuse; the
    second run changes nothing; put back, it serves again."""
    import dataclasses

    lab = config.parse(stackfile.load_stack_file(str(STACKS["pools"])))
    host = lab.node("mail-1")
    be, gw = wired_backend(nodes, lab, host)
    both = dataclasses.replace(lab, services=tuple(dataclasses.replace(s, backends=()) for s in lab.services))
    others = tuple(b.name for b in lab.backends if b != host)
    neither = dataclasses.replace(lab, services=tuple(dataclasses.replace(s, backends=others) for s in lab.services))

    def steps(model):
        return [s for s in plan.host_steps(model, host, CREDS) if s.name in ("web", "tcp")]

    def listening() -> str:
        return be.run("ss -H -l -t -n | awk '{print $4}' | sort").stdout

    be.run_bundle(plan.host_steps(lab, host, CREDS)[0].bundle())  # its library: what the steps take from it
    for st in steps(both):
        be.run_bundle(st.bundle())
    assert ":80" in listening() and ":25" in listening()
    out = [be.run_bundle(st.bundle()).stdout for st in steps(neither)]
    assert "stopped apache2" in out[0] and "stopped halab-banner" in out[1], out
    assert ":80" not in listening() and ":25" not in listening() and ":8080" not in listening(), listening()
    refused = gw.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 http://{host.address}/", check=False)
    assert refused.stdout == "000", refused.stdout
    again = [be.run_bundle(st.bundle()).stdout for st in steps(neither)]
    assert not any("stopped" in o for o in again), again
    for st in steps(both):
        be.run_bundle(st.bundle())
    assert ":80" in listening() and ":25" in listening()


def servers_state(lb: NsNode, backend: str) -> dict[str, int]:
    """haproxy's operational state of each server of one backend: 2 UP, 0 DOWN."""
    out = lb.run_bundle(drill_bundle("haproxy-api", "show", "servers", "state", backend)).stdout
    fields = [line.split() for line in out.splitlines()[1:] if line and not line.startswith("#")]
    return {f[3]: int(f[5]) for f in fields}


def test_a_step_on_another_guest_than_the_one_meant_changes_nothing(nodes):
    """pulumi up reaches a node by its address: a renamed node (or one given another's address)
    is created while the old guest still answers there. The driver names the node it means
    (HALAB_GUEST), and a step that lands on any other fails, naming both, before any change."""
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")  # what the sysctl step needs to succeed on lb1
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    # the first step, the library, refuses too: nothing of it is written
    p = lb.run_bundle(steps["library"].bundle(), check=False, env={"HALAB_GUEST": "lb3"})
    assert p.returncode != 0 and "this is lb1, not lb3: another guest answers at this address" in p.stderr
    assert lb.run(["test", "-e", LIBRARY_DIR], check=False).returncode != 0
    lb.run_bundle(steps["library"].bundle(), env={"HALAB_GUEST": "lb1"})
    sysctl = steps["sysctl"]
    p = lb.run_bundle(sysctl.bundle(), check=False, env={"HALAB_GUEST": "lb3"})
    assert p.returncode != 0 and "this is lb1, not lb3: another guest answers at this address" in p.stderr
    assert lb.run(["test", "-e", PATHS["LB_SYSCTL_CONF"]], check=False).returncode != 0  # nothing written
    # on the guest meant, the same bundle writes its file
    lb.run_bundle(sysctl.bundle(), env={"HALAB_GUEST": "lb1"})
    assert lb.run(["test", "-e", PATHS["LB_SYSCTL_CONF"]], check=False).returncode == 0


def test_the_serving_step_waits_for_every_server_up_and_names_those_that_are_not(nodes):
    """`up` ends with lb-serving.sh: it returns once haproxy calls every listed server UP and
    checked. Past its bound, a pool without one server UP fails it, naming each server with
    haproxy's word for it; a server down in a pool that still serves is a warning; stats it
    cannot read are never a pass."""
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    lb.run("ip addr add 192.168.69.111/24 dev eth0")
    peer.run("ip addr add 192.168.69.106/24 dev eth0")  # www1 answers; www2 (.107) is nowhere
    web = ["python3", "-m", "http.server", "-b", "0.0.0.0", "-d", "/tmp", "80"]
    subprocess.Popen(peer.argv(web), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    (serving,) = plan.serving_steps(LAB, LAB.load_balancers[0])
    assert "SERVING_SERVERS='bk_http/www1 bk_http/www2 bk_https/www1 bk_https/www2'" in serving.files[0][1]

    def waiting_for(servers: str, within: int) -> Step:
        conf = f"SERVING_WITHIN={within}\nSERVING_SERVERS='{servers}'\n"
        return Step("lb1", "serving", serving.script, files=((PATHS["SERVING_CONF"], conf), serving.files[1]))

    for name in ("library", "sysctl", "tproxy", "secrets", "haproxy"):
        lb.run_bundle(steps[name].bundle())
    # a fresh haproxy calls the unreachable www2 UP until its first check: not serving yet
    p = lb.run_bundle(waiting_for("bk_http/www2", 1).bundle(), check=False)
    assert p.returncode != 0 and "not serving after 1s: no server UP in bk_http; not UP: bk_http/www2 " in p.stderr
    # www1 (it serves :80 only) passes its checks: the step returns
    p = lb.run_bundle(waiting_for("bk_http/www1", 20).bundle())
    assert "serving: every server UP (1 in the pools)" in p.stdout, p.stdout
    started = time.monotonic()
    p = lb.run_bundle(waiting_for("bk_http/www2 bk_http/www9", 3).bundle(), check=False)
    assert p.returncode != 0 and time.monotonic() - started < 10, p.stdout
    assert "no server UP in bk_http; not UP: bk_http/www2 DOWN, bk_http/www9 absent" in p.stderr, p.stderr
    p = lb.run_bundle(waiting_for("bk_http/www1 bk_http/www2", 2).bundle())  # bk_http serves
    assert "warning: serving, but after 2s not UP: bk_http/www2 DOWN" in p.stderr, p.stderr
    # haproxy gone, its socket left: the stats cannot be read, which is no pass
    lb.run(["pkill", "-KILL", "-x", "haproxy"])
    p = lb.run_bundle(waiting_for("bk_http/www1", 1).bundle(), check=False)
    assert p.returncode != 0 and "not serving after 1s: haproxy's runtime API:" in p.stderr, p.stderr


def test_a_reload_keeps_each_servers_state_and_a_new_server_starts_down(nodes):
    """haproxy calls every server UP until its first check. After a reload, that sent clients to
    a server its checks had taken out, and to a backend added to the config before it had
    booted: the VM lab lost a request to www3 that way (each waits out `timeout connect`). The
    haproxy step, given a third backend, reloads with each server's state carried over (www1 UP,
    the unreachable www2 DOWN), and www3 starts DOWN although it serves, then comes UP through its
    checks."""
    lb, peer = nodes("lb1"), nodes("peer")
    veth(lb, "eth0", peer, "eth0")
    lb.run("ip addr add 192.168.69.111/24 dev eth0")
    # www1 and the coming www3 answer the checks (a 200 on /); www2 (.107) is nowhere
    peer.run("ip addr add 192.168.69.106/24 dev eth0 && ip addr add 192.168.69.108/24 dev eth0")
    web = ["python3", "-m", "http.server", "-b", "0.0.0.0", "-d", "/tmp", "80"]
    subprocess.Popen(peer.argv(web), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    for name in ("library", "sysctl", "tproxy", "secrets", "haproxy"):
        lb.run_bundle(steps[name].bundle())
    settled = wait_for(lambda: servers_state(lb, "bk_http") == {"www1": 2, "www2": 0}, 15)
    assert settled is not None, servers_state(lb, "bk_http")

    backends = [{"name": b.name, "address": str(b.address)} for b in LAB.backends]
    three = config.parse({"halab:backends": [*backends, {"name": "www3", "address": "192.168.69.108"}]})
    step = {s.name: s for s in plan.host_steps(three, three.load_balancers[0], CREDS)}["haproxy"]
    p = lb.run_bundle(step.bundle())
    assert "reloading haproxy" in p.stdout, p.stdout
    assert "4 server states kept, 2 servers start DOWN" in p.stderr, p.stderr  # www3 in bk_http and bk_https
    # the new process's first answer (the old one has no www3): without the state file, www2
    # and www3 would both be UP in it
    deadline = time.monotonic() + 5
    while "www3" not in (first := servers_state(lb, "bk_http")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first == {"www1": 2, "www2": 0, "www3": 0}
    assert wait_for(lambda: servers_state(lb, "bk_http")["www3"] == 2, 15) is not None, "www3 comes UP when checked"
    assert servers_state(lb, "bk_http")["www2"] == 0


def test_server_state_keeps_only_servers_at_the_same_address_and_port(tmp_path):
    """halab-haproxy-state against a canned runtime API: a server the running haproxy has at the
    same address and port keeps its line (www1 UP, www2 DOWN); one that moved (www2 in the new
    config, another port) or is new (www3) gets its newcomer line. No answer: a state file of no
    server (written all the same, for the watcher's reload grace) and the reload goes on."""
    backends = [{"name": f"www{i}", "address": f"192.168.69.10{5 + i}"} for i in (1, 2, 3)]
    lab = config.parse({"halab:services": [{"name": "http", "port": 80}], "halab:backends": backends})
    newcomers = tmp_path / "new.state"
    newcomers.write_text(render.haproxy_new_servers_state(lab))
    running = (
        "1\n# be_id be_name srv_id srv_name srv_addr ...\n"
        "4 bk_http 1 www1 192.168.69.106 2 0 1 1 80 6 3 4 6 0 0 0 - 80 - 0 0 - - 0\n"
        "4 bk_http 2 www2 192.168.69.107 0 0 1 1 12 8 2 0 6 0 0 0 - 8080 - 0 0 - - 0\n\n"
    )
    sock_path, state = tmp_path / "admin.sock", tmp_path / "server-state"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(1)

    asked: list[bytes] = []  # read here: an assert in the thread would fail nothing

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            asked.append(conn.recv(100))
            conn.sendall(running.encode())

    th = threading.Thread(target=answer)
    th.start()
    helper = [sys.executable, str(shipped("halab-haproxy-state", tmp_path)), *map(str, (newcomers, sock_path, state))]
    p = subprocess.run(helper, capture_output=True, text=True, timeout=10, check=True)
    th.join()
    assert asked == [b"show servers state\n"]
    lines = {f.split()[3]: f for f in state.read_text().splitlines()[1:] if not f.startswith("#")}
    assert lines["www1"] == running.splitlines()[2]  # kept as it runs
    assert lines["www2"].split()[4:6] == ["192.168.69.107", "0"] and lines["www2"].split()[18] == "80"
    assert lines["www2"] in newcomers.read_text() and lines["www2"] != running.splitlines()[3]
    assert lines["www3"] in newcomers.read_text()
    assert "1 server states kept, 2 servers start DOWN" in p.stderr, p.stderr  # www2 moved, www3 is new
    assert state.read_text().startswith("1\n")

    listener.close()
    before = state.stat().st_mtime_ns
    time.sleep(0.01)
    p = subprocess.run(helper, capture_output=True, text=True, timeout=10, check=True)
    assert "every server starts UP" in p.stderr, p.stderr
    # no server line, yet written: its mtime is the watcher's word that a reload began
    assert [x for x in state.read_text().splitlines() if not x.startswith("#")] == ["1"]
    assert state.stat().st_mtime_ns > before


# The bundles themselves, run with bash in a temporary directory: what they stage, not what their
# step does (the line that runs it copies the stage out instead). No namespace: nothing they run
# touches more than the temporary directory.
RUNS_THE_STEP = re.compile(r'^bash "\$HALAB_STAGE/step\.sh".*$', re.M)


def staged_by(bundle: str, out: Path, library: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a bundle up to its step, whose line copies the stage to `out` instead; the library
    at `library` instead of LIBRARY_DIR."""
    if library is not None:
        bundle = bundle.replace(LIBRARY_DIR, str(library))
    bundle, n = RUNS_THE_STEP.subn(f'cp -a "$HALAB_STAGE/." "{out}"', bundle)
    assert n == 1, bundle[-300:]
    env = {k: v for k, v in os.environ.items() if k != "HALAB_GUEST"}
    return subprocess.run(["bash", "-s"], input=bundle, capture_output=True, text=True, env=env, check=False)


def library_for(node, lab=LAB) -> list[Step]:
    """What a node's library is made for: its steps after the library, its serving step and its
    roll-out gates."""
    return [*plan.host_steps(lab, node, CREDS)[1:], *plan.serving_steps(lab, node), *plan.gate_steps(lab, node)]


def installed_library(tmp_path: Path, steps) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The library step for `steps`, run for real into a temporary directory (it needs root, as
    on a node: need_root)."""
    need_root_and("sha256sum", "gzip")
    lib = tmp_path / "library"
    step = library_step("node", steps, str(lib))
    p = subprocess.run(["bash", "-s"], input=step.bundle(), capture_output=True, text=True, check=False)
    return lib, p


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`: its bytes and its mode."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode) for p in sorted(root.rglob("*")) if p.is_file()
    }


TRICKY = {
    "/etc/halab/plain.conf": "a=1\n",
    "/etc/halab/no-final-newline": "last line without one",
    "/etc/halab/delimiters": "HALAB_EOF\nHALAB_EOF_1\n HALAB_EOF\nHALAB_EOF \n",
    "/etc/halab/shell-text": "echo \"$HOME\" `id` $(id) \\\n'quoted' \\t %s\n",
    "/etc/halab/crlf-and-utf8": "première ligne\r\nzweite Zeile — ✓\r\n\n\n",
    "/etc/halab/empty": "",
    "/etc/halab/only-newlines": "\n\n",
    "/etc/halab/nul": "before\0after\n",
}


def test_a_bundle_stages_every_file_byte_for_byte_and_text_in_plain_text(tmp_path):
    """The files a bundle carries reach the stage exactly, whatever they hold: no final newline, a
    line that is the heredoc's delimiter, shell syntax, CRLF, UTF-8, nothing, a NUL byte. Text
    is in the bundle as it is (a preview's diff shows its lines), not base64."""
    step = Step("node", "t", "wait-ready.sh", files=tuple(TRICKY.items()))
    bundle = step.bundle()
    p = staged_by(bundle, tmp_path / "out")
    assert p.returncode == 0, p.stderr
    for path, content in TRICKY.items():
        assert (tmp_path / "out" / "root" / path.lstrip("/")).read_bytes() == content.encode(), path
        if content and "\0" not in content:
            assert content in bundle, path
    assert (tmp_path / "out" / "lib.sh").read_text() == (NODE_STEPS / "lib.sh").read_text()
    assert (tmp_path / "out" / "step.sh").read_text() == (NODE_STEPS / "wait-ready.sh").read_text()
    assert bundle.count("base64 -d >") == 1  # a file: the NUL byte's only (the code travels packed)


def test_the_library_step_installs_exactly_what_the_steps_name_and_is_idempotent(tmp_path):
    """A node's library holds lib.sh, its steps' scripts and the static node files they install,
    byte for byte, by name and by sha256, and nothing else by name (a file an older library
    held goes); a second run changes nothing, and says so."""
    steps = plan.host_steps(LAB, LAB.load_balancers[0], CREDS)
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "renamed-long-ago").write_text("x\n")
    lib, p = installed_library(tmp_path, library_for(LAB.load_balancers[0]))
    assert p.returncode == 0, p.stderr
    assert "removed " in p.stdout and "library in place" in p.stdout, p.stdout
    want = {name: c.encode() for name, c in ((path.rsplit("/", 1)[1], c) for path, c in steps[0].files)}
    assert {name: data for name, (data, _) in tree(lib).items() if "/" not in name} == want
    by_sha = {"sha256/" + hashlib.sha256(data).hexdigest(): data for data in want.values()}
    assert {name: data for name, (data, _) in tree(lib).items() if "/" in name} == by_sha
    assert {"lib.sh", "lb-haproxy.sh", "lb-serving.sh", "halab-haproxy-watch", "haproxy-halab.conf"} <= set(want)
    assert {"lb-handoff.sh", "lb-drain.sh", "halab-haproxy-ctl"} <= set(want)  # the roll-out's gates
    assert not {"backend-web.sh", "halab-routes", "drill.sh"} & set(want)  # another role's, a drill's
    before = {n: (f.stat().st_mtime_ns, f.stat().st_ino) for n, f in ((f.name, f) for f in lib.iterdir())}
    _, again = installed_library(tmp_path, library_for(LAB.load_balancers[0]))
    assert again.returncode == 0 and "library unchanged: " in again.stdout and "installed" not in again.stdout
    assert {n: (f.stat().st_mtime_ns, f.stat().st_ino) for n, f in ((f.name, f) for f in lib.iterdir())} == before


def test_the_library_step_validates_everything_before_it_changes_anything(tmp_path):
    """A staged script that does not parse fails the library step before any file of the
    library changes, the good ones beside it included."""
    lib, p = installed_library(tmp_path, library_for(LAB.backends[0]))
    assert p.returncode == 0, p.stderr
    before = tree(lib)
    good = library_step("node", library_for(LAB.backends[0]), str(lib))
    appended = {"lib.sh": "# a new version\n", "halab-routes": "if then fi\n"}  # the second does not parse
    broken = dataclasses.replace(
        good, files=tuple((path, c + appended.get(path.rsplit("/", 1)[1], "")) for path, c in good.files)
    )
    p = subprocess.run(["bash", "-s"], input=broken.bundle(), capture_output=True, text=True, check=False)
    assert p.returncode != 0 and "staged halab-routes does not parse" in p.stderr, p.stderr
    assert tree(lib) == before


def test_a_step_takes_its_code_from_the_library_checked_and_refuses_a_stale_one(tmp_path):
    """A step after the library carries only its rendered files; lib.sh, its script and the
    static node files come from the node's library, each checked against the sha256 its bundle
    names. A library missing or stale (lib.sh changed since) stops the step before it runs."""
    steps = {s.name: s for s in plan.host_steps(LAB, LAB.load_balancers[0], CREDS)}
    haproxy = steps["haproxy"]
    lib_text = (NODE_STEPS / "lib.sh").read_text()
    assert lib_text not in haproxy.bundle() and render.node_file("halab-haproxy-state") not in haproxy.bundle()
    assert render.haproxy_cfg(LAB, LAB.load_balancers[0]) in haproxy.bundle()  # rendered: plain text

    missing = staged_by(haproxy.bundle(), tmp_path / "out", tmp_path / "nowhere")
    assert missing.returncode != 0 and not (tmp_path / "out").exists()
    assert "the library on this node does not hold this version of " in missing.stderr, missing.stderr
    assert "the library step must run first" in missing.stderr

    lib, p = installed_library(tmp_path, library_for(LAB.load_balancers[0]))
    assert p.returncode == 0, p.stderr
    ok = staged_by(haproxy.bundle(), tmp_path / "out", lib)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "lib.sh").read_text() == lib_text
    assert (tmp_path / "out" / "step.sh").read_text() == (NODE_STEPS / "lb-haproxy.sh").read_text()
    for path, content in haproxy.files:
        assert (tmp_path / "out" / "root" / path.lstrip("/")).read_bytes() == content.encode(), path

    kept = lib / "sha256" / _sha(lib_text)
    kept.write_text(lib_text + "# changed since this step was built\n")
    stale = staged_by(haproxy.bundle(), tmp_path / "out2", lib)
    assert stale.returncode != 0 and not (tmp_path / "out2").exists()
    assert f"does not hold this version of lib.sh ({kept})" in stale.stderr, stale.stderr


def test_a_bundle_built_before_an_upgrade_still_runs_after_it(tmp_path):
    """A roll-out gate's delete runs the bundle it was created with, perhaps after a newer library
    was installed on its node (the engine deletes a guest's gates before it replaces the guest,
    late in an `up` whose library steps already ran). The library keeps every version by
    sha256, so the old bundle stages its own lib.sh and script; the new one, the new."""
    node = LAB.load_balancers[0]
    old_drain = load_balancer.drain_step(LAB, node, LAB.backends[0])
    lib, p = installed_library(tmp_path, library_for(node))
    assert p.returncode == 0, p.stderr
    lib_text = (NODE_STEPS / "lib.sh").read_text()
    newer = lib_text + "# the next version\n"
    upgrade = library_step("node", library_for(node), str(lib))
    upgrade = dataclasses.replace(
        upgrade, files=tuple((path, newer if path.endswith("/lib.sh") else c) for path, c in upgrade.files)
    )
    p = subprocess.run(["bash", "-s"], input=upgrade.bundle(), capture_output=True, text=True, check=False)
    assert p.returncode == 0 and f"installed {lib}/lib.sh" in p.stdout, p.stderr
    assert (lib / "lib.sh").read_text() == newer  # by name: what this version holds
    old = staged_by(old_drain.bundle(), tmp_path / "old", lib)
    assert old.returncode == 0, old.stderr
    assert (tmp_path / "old" / "lib.sh").read_text() == lib_text
    new_drain = old_drain.bundle().replace(_sha(lib_text), _sha(newer))
    new = staged_by(new_drain, tmp_path / "new", lib)
    assert new.returncode == 0 and (tmp_path / "new" / "lib.sh").read_text() == newer, new.stderr


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("stack", ["dev", "pools"])
def test_every_step_finds_its_code_in_its_nodes_library(tmp_path, stack):
    """Each node's library holds everything its later steps and its serving step name: every
    one of them stages, on that library, exactly the files it was built with."""
    lab = config.parse(stackfile.load_stack_file(str(STACKS[stack])))
    for node in lab.nodes:
        steps = library_for(node, lab)
        lib, p = installed_library(tmp_path / node.name, steps)
        assert p.returncode == 0, p.stderr
        for step in steps:
            out = tmp_path / node.name / step.name
            staged = staged_by(step.bundle(), out, lib)
            assert staged.returncode == 0, f"{node.name}/{step.name}: {staged.stderr}"
            assert (out / "step.sh").read_text() == (NODE_STEPS / step.script).read_text()
            for path, content in step.files:
                assert (out / "root" / path.lstrip("/")).read_bytes() == content.encode(), (node.name, path)
