"""Rendered configs: the seed's intent without its mistakes, and accepted by the real daemons."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, STACKS, need_commands, need_root_and

from halab.core import config, plan, render, stackfile, step
from halab.core.model import Credentials, Lab
from halab.drivers.netns.node import NsNode, veth
from halab.node import STEPS as NODE_STEPS
from halab.node.paths import PATHS

CREDS = Credentials("s3cret", "stats-secret-123")


def lab_of(stack: str) -> Lab:
    return config.parse(stackfile.load_stack_file(str(STACKS[stack])))


def sections(cfg: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in cfg.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = line.strip()
            out[current] = []
        elif line.strip() and not line.strip().startswith("#"):
            out.setdefault(current, []).append(line.strip())
    return out


@pytest.mark.parametrize("stack", ["dev", "large", "lab3", "pools", "fast"])
def test_haproxy_cfg_fixes_the_seed(stack):
    lab = lab_of(stack)
    for lb in lab.load_balancers:
        cfg = render.haproxy_cfg(lab, lb)
        secs = sections(cfg)
        assert not any(line.startswith(("user ", "group ")) for line in secs["global"]), "haproxy must not run as root"
        # the stats page and the Prometheus exporter, both behind the password from the environment
        stats = secs["listen stats"]
        assert secs["userlist halab-stats"] == [
            f'user {lab.haproxy.stats_user} insecure-password "${{HALAB_STATS_PASSWORD}}"'
        ]
        auth = stats.index('http-request auth realm "HAProxy statistics" unless { http_auth(halab-stats) }')
        assert auth < stats.index("http-request use-service prometheus-exporter if { path /metrics }")
        # the servers' checks, at the stack's timers
        hc = lab.health_check
        assert f"default-server inter {hc.interval} rise {hc.rise} fall {hc.fall}" in secs["defaults"]
        assert f"timeout check {hc.timeout_seconds}s" in secs["defaults"]
        # stick tables replicated: every load balancer a peer, this one named as the local one
        assert f"localpeer {lb.name}" in secs["global"]
        assert sorted(secs["peers halab"]) == sorted(
            f"peer {o.name} {o.address}:{lab.haproxy.peers_port}" for o in lab.load_balancers
        )
        for svc in lab.services:
            front = secs[f"frontend ft_{svc.name}"]
            assert f"bind {lab.haproxy.listen_ip}:{svc.port} transparent" in front
            back = secs[f"backend bk_{svc.name}"]
            servers = [line for line in back if line.startswith("server ")]
            names = [s.split()[1] for s in servers]
            assert len(names) == len(set(names)) == len(lab.pool(svc)), f"{lb.name} bk_{svc.name}: {names}"
            assert all(re.search(r"\scheck(\s|$)", s) for s in servers), servers
            assert sorted(s.split()[2] for s in servers) == sorted(
                f"{b.address}:{svc.backend_port}" for b in lab.pool(svc)
            )
            assert f"balance {svc.balance}" in back
            # how the backend learns the client's address
            assert ("source 0.0.0.0 usesrc clientip" in back) == (svc.transparency == "tproxy")
            assert all(
                (" send-proxy check-send-proxy " in s) == (svc.transparency == "proxy-protocol") for s in servers
            )
            # the check asks the service itself; live traffic errors take a server out too
            check = svc.check
            lines = {
                "http": [f"option httpchk GET {check.path}", f"http-check expect status {check.status}"],
                "banner": ["option tcp-check", f'tcp-check expect string "{check.expect}"'],
                "smtp": ["option smtpchk"],
                "connect": [],
            }[check.kind]
            assert [x for x in back if x.startswith(("option httpchk", "http-check", "option tcp-check", "tcp-check",
                                                     "option smtpchk"))] == lines  # fmt: skip
            assert all((" check-ssl verify none" in s) == (check.kind == "http" and svc.backend_tls) for s in servers)
            layer = "layer7" if svc.transparency == "forwarded-for" else "layer4"
            assert all(s.endswith(f" observe {layer} error-limit {lab.health_check.fall} on-error mark-down")
                       for s in servers)  # fmt: skip
            assert ("option forwardfor" in back) == (svc.transparency == "forwarded-for")
            assert f"mode {'http' if svc.transparency == 'forwarded-for' else 'tcp'}" in front
            # persistence that matches: a table *and* a rule that stores and looks up the source
            assert ("stick on src" in back) == svc.sticky
            assert any(line.startswith("stick-table type ip") for line in back) == svc.sticky
            assert all(line.endswith(" peers halab") for line in back if line.startswith("stick-table"))
            assert not any(line.startswith("stick store-request") for line in back)


@pytest.mark.parametrize("stack", ["dev", "lab3"])
def test_each_load_balancer_has_its_own_ports_and_no_time_wait(stack):
    """The second chance (docs/handoff.md) needs what the `socket` match finds on a load balancer
    to be its own: no TIME_WAIT socket left to swallow a reused client address and port, and
    haproxy's connections to the backends on ports no peer uses."""
    lab = lab_of(stack)
    ranges = []
    for lb in lab.load_balancers:
        conf = render.lb_sysctl(lab, lb)
        assert "net.ipv4.tcp_max_tw_buckets = 0\n" in conf
        low, high = map(int, re.search(r"ip_local_port_range = (\d+) (\d+)", conf).groups())
        assert 32768 <= low < high <= 60999 and high - low >= 9000
        ranges.append(range(low, high + 1))
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.stop <= b.start, ranges


def conf_values(text: str) -> dict[str, str]:
    """A rendered KEY=VALUE file as the node reads it (halab-second-chance's read_conf)."""
    return dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))


def test_packet_path_comes_from_the_model():
    """The marks, tables and rule priorities live in the model (PacketPath): halab-tproxy and
    halab-second-chance read them from tproxy.conf, halab-keepalived-hooks from vrrp.conf, and
    keepalived.conf's second-chance rule is rendered from them, so no two files can disagree."""
    lab = lab_of("dev")
    pp = lab.packet_path
    # the second chance's rule before the local table, the blackhole after it; marks distinct
    assert 0 < pp.second_chance_pref < pp.local_pref < pp.last_pref and pp.divert_mark != pp.second_chance_mark
    second = {"SECOND_MARK": pp.second_chance_mark, "SECOND_TABLE": pp.second_chance_table,
              "SECOND_PREF": pp.second_chance_pref}  # fmt: skip
    for lb in lab.load_balancers:
        tproxy = conf_values(render.tproxy_conf(lab, lb))
        want = {"DIVERT_MARK": pp.divert_mark, "DIVERT_TABLE": pp.divert_table, **second,
                "LOCAL_PREF": pp.local_pref, "LAST_PREF": pp.last_pref}  # fmt: skip
        assert {k: tproxy[k] for k in want} == {k: str(v) for k, v in want.items()}
        vrrp = conf_values(render.vrrp_conf(lab, lb))
        assert {k: vrrp[k] for k in second} == {k: str(v) for k, v in second.items()}
        rule = f"fwmark {pp.second_chance_mark} table {pp.second_chance_table} priority {pp.second_chance_pref}"
        assert re.search(rf"virtual_rules \{{\s*from all {rule} no_track\s*\}}", render.keepalived_conf(lab, lb, CREDS))
    # ... and the node files write none of them (pref 0 is the kernel's own, for the local table)
    for name in ("halab-tproxy", "halab-second-chance", "halab-keepalived-hooks"):
        text = render.node_file(name)
        literal = re.search(r'(?:MARK|TABLE|PREF|SECOND) ?= ?"?\d|\b(?:fwmark|lookup|table|pref|priority) [1-9]', text)
        assert not literal, f"{name}: {literal[0]}"


@pytest.mark.parametrize("stack", ["dev", "large", "lab3", "pools", "fast"])
def test_keepalived_conf_fixes_the_seed(stack):
    lab = lab_of(stack)
    confs = [render.keepalived_conf(lab, lb, CREDS) for lb in lab.load_balancers]
    prios = [int(re.search(r"^\s*priority (\d+)$", c, re.M).group(1)) for c in confs]
    assert len(set(prios)) == len(prios), prios
    for lb, conf in zip(lab.load_balancers, confs, strict=True):
        body = "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
        assert "lvs_sync_daemon_interface" not in body and "killall" not in body
        assert "enable_script_security" in conf and "script_user nobody nogroup" in conf
        # every node starts as backup: the priorities elect the master, not the start order
        assert re.search(r"^\s*state BACKUP$", conf, re.M) and "state MASTER" not in conf
        v = lab.vrrp
        script = conf.split("vrrp_script chk_haproxy {", 1)[1].split("}", 1)[0].split()
        assert script[-8:] == ["interval", str(v.check_interval), "timeout", str(v.check_timeout),
                               "fall", "2", "rise", "2"], script  # fmt: skip
        assert f"advert_int {v.advert_text}" in conf
        penalty = lab.serving_penalty
        tracked = conf.split("vrrp_instance", 1)[1]
        assert re.search(rf"track_file \{{\s*haproxy_watch weight 0\s*haproxy_serving weight -{penalty}\s*\}}", tracked)
        # a node that does not serve drops below every peer, never to FAULT (-254)
        priorities = sorted(lb.priority for lb in lab.load_balancers)
        assert priorities[-1] - penalty < priorities[0] and penalty < 254
        assert f"SERVING_PERIOD={v.serving_period:g}\n" in render.haproxy_watch_conf(lab)
        watch = render.haproxy_watch_conf(lab)
        assert f"PERIOD={v.watch_period:g}\n" in watch and f"TIMEOUT={v.watch_timeout:g}\n" in watch
        assert f"FALL={v.watch_fall}\n" in watch and f"RELOAD_GRACE={v.reload_grace}\n" in watch
        ports = " ".join(str(s.port) for s in lab.services)
        assert f'script "{PATHS["KEEPALIVED_CHECK"]} {lab.haproxy.health_port} {v.reload_grace} {ports}"' in conf
        assert re.search(r"track_script \{\s*chk_haproxy\s*\}", conf)
        assert f"virtual_router_id {lab.vrrp.router_id}" in conf and f"interface {lab.network.interface}" in conf
        assert f"{lab.vip}/32 dev {lab.network.interface}" in conf
        assert f"router_id {lb.name}" in conf and f"vrrp_version {lab.vrrp.version}" in conf
        assert ("auth_pass s3cret" in conf) == (lab.vrrp.version == 2)  # VRRPv3 has no authentication
        peers = sorted(re.findall(r"^\s+(\d+\.\d+\.\d+\.\d+)$", conf.split("unicast_peer", 1)[-1].split("}")[0], re.M))
        if lab.vrrp.unicast:
            assert f"unicast_src_ip {lb.address}" in conf and "check_unicast_src" in conf
            assert peers == sorted(str(o.address) for o in lab.load_balancers if o != lb)
        else:
            assert "unicast_peer" not in conf
        assert ("nopreempt" in body) != lab.vrrp.preempt
        assert f'notify "{PATHS["KEEPALIVED_NOTIFY"]}" root' in conf


@pytest.mark.parametrize("stack", ["dev", "large", "lab3", "pools", "fast"])
def test_haproxy_accepts_every_rendered_config(stack, tmp_path):
    need_commands("haproxy")  # as any user: haproxy -c needs no privilege
    lab = lab_of(stack)
    for lb in lab.load_balancers:
        f = tmp_path / f"{lb.name}.cfg"
        f.write_text(render.haproxy_cfg(lab, lb))
        p = subprocess.run(["haproxy", "-c", "-f", str(f)], capture_output=True, text=True, check=False)
        assert p.returncode == 0, f"{lb.name}: {p.stdout}{p.stderr}"


def keepalived_test(node: NsNode, conf: str):
    """The step scripts' own check (halab/node/steps/lib.sh keepalived_test), inside the node:
    lib.sh and paths.sh are copied there first (a node does not see this checkout's path: it
    may be under /tmp, which each node has of its own)."""
    lib = node.run("mktemp -d").stdout.strip()
    for name in ("lib.sh", "paths.sh"):
        node.run(["cp", "/dev/stdin", f"{lib}/{name}"], input=(NODE_STEPS / name).read_text())
    script = f'. "{lib}/lib.sh"\nf=$(mktemp); cat >"$f"; keepalived_test "$f"'
    return node.run(["bash", "-c", script], input=conf, check=False)


@pytest.fixture
def lb_node():
    need_root_and("keepalived", "ip", "unshare", "nsenter")
    created: list[NsNode] = []

    def make(iface: str) -> NsNode:
        a = NsNode.create(f"halab-kt{len(created)}")
        created.append(a)
        b = NsNode.create(f"halab-kp{len(created)}")
        created.append(b)
        veth(a, iface, b, "peer0")
        check = render.node_file("halab-check-haproxy")
        a.run(f"install -D -m 0755 /dev/stdin {PATHS['KEEPALIVED_CHECK']}", input=check)
        return a

    yield make
    for n in created:
        n.destroy()


@pytest.mark.parametrize("stack", ["dev", "large", "lab3", "pools", "fast"])
def test_keepalived_accepts_every_rendered_config(stack, lb_node):
    lab = lab_of(stack)
    node = lb_node(lab.network.interface)
    for lb in lab.load_balancers:
        p = keepalived_test(node, render.keepalived_conf(lab, lb, CREDS))
        assert p.returncode == 0, f"{lb.name}: {p.stdout}{p.stderr}"


def test_keepalived_check_can_fail(lb_node):
    """The same check rejects a wrong interface, an out-of-range router id and a missing script."""
    lab = lab_of("dev")
    node = lb_node("eth0")
    good = render.keepalived_conf(lab, lab.load_balancers[0], CREDS)
    assert keepalived_test(node, good).returncode == 0
    assert keepalived_test(node, good.replace("interface eth0", "interface eth9")).returncode != 0
    assert keepalived_test(node, good.replace("virtual_router_id 100", "virtual_router_id 300")).returncode != 0
    node.run(f"rm {PATHS['KEEPALIVED_CHECK']}")
    assert keepalived_test(node, good).returncode != 0


def test_backends_serve_each_service_as_configured():
    lab = lab_of("lab3")
    be = lab.backends[0]
    site = render.apache_site(lab, be)
    assert render.apache_ports_conf(lab, be).split("\n")[1:-1] == [
        "Listen 80",
        "Listen 443",
        "Listen 8080",
        "Listen 8081",
        "Listen 8587",
    ]
    assert "RemoteIPProxyProtocol On" in site.split("<VirtualHost *:8081>")[1].split("</VirtualHost>")[0]
    xff = site.split("<VirtualHost *:8080>")[1].split("</VirtualHost>")[0]
    assert "RemoteIPHeader X-Forwarded-For" in xff and "RemoteIPInternalProxy 10.77.0.11 10.77.0.12 10.77.0.13" in xff
    assert render.banner_conf(lab, be).splitlines()[1:] == ["25 plain", "143 proxy"]
    names = [s.name for s in plan.host_steps(lab, be, CREDS)]
    assert names == [
        "library",
        "ready",
        "packages",
        "sysctl",
        "gateway",
        "web",
        "tcp",
    ]  # serving once replies go via the VIP


def test_each_backend_serves_only_its_pools():
    """A web backend listens on the web ports and runs no banner; a mail backend runs the banner
    on the mail ports and Apache only for the service every backend serves. Both steps are on
    every backend: one with nothing to serve turns its daemon off (halab/node/steps)."""
    lab = lab_of("pools")
    ports = {b.name: render.apache_ports_conf(lab, b).splitlines()[1:] for b in lab.backends}
    banner = {b.name: render.banner_conf(lab, b).splitlines()[1:] for b in lab.backends}
    assert ports["web-1"] == ["Listen 80", "Listen 443", "Listen 8080"] and banner["web-1"] == []
    assert ports["mail-1"] == ["Listen 8080"] and banner["mail-1"] == ["25 plain", "143 plain"]
    assert "<VirtualHost *:443>" not in render.apache_site(lab, lab.node("mail-1"))
    for b in lab.backends:
        assert [s.name for s in plan.host_steps(lab, b, CREDS)][5:7] == ["web", "tcp"]


def test_cloud_init_gives_a_static_address_and_the_key():
    import yaml

    lab = lab_of("large")
    node = lab.backends[0]
    ci = render.cloud_init(lab, node, "ssh-ed25519 AAAAkey me")
    user = yaml.safe_load(ci["user-data"])
    assert ci["user-data"].startswith("#cloud-config\n")
    assert user["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAkey me"]
    net = yaml.safe_load(ci["network-config"])["ethernets"]["lab"]
    assert net["match"]["macaddress"] == node.mac and net["set-name"] == "ens3"
    assert net["addresses"] == ["10.42.8.21/24"]


def test_non_secret_bundles_do_not_depend_on_credentials():
    """The Pulumi driver sends these as plain inputs: they must not carry a secret by accident."""
    lab = lab_of("dev")
    for node in lab.nodes:
        a = plan.host_steps(lab, node, Credentials("aaaaaaaa", "aaaaaaaaaaaaaaaa"))
        b = plan.host_steps(lab, node, Credentials("bbbbbbbb", "bbbbbbbbbbbbbbbb"))
        for sa, sb in zip(a, b, strict=True):
            assert (sa.bundle() == sb.bundle()) != sa.secret, f"{node.name}/{sa.name}"


def _render_cli(stack: str, out: Path) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [str(ROOT / "scripts/render"), "--config", str(STACKS[stack]), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return p


def test_render_cli_writes_every_host(tmp_path):
    out = tmp_path / "out"
    _render_cli("large", out)
    lab = lab_of("large")
    assert sorted(d.name for d in out.iterdir()) == sorted(n.name for n in lab.nodes)
    for lb in lab.load_balancers:
        assert (out / lb.name / "etc/haproxy/haproxy.cfg").read_text() == render.haproxy_cfg(lab, lb)
        assert "auth_pass REDACTED" in (out / lb.name / "etc/keepalived/keepalived.conf").read_text()
        steps = (out / lb.name / "STEPS").read_text().splitlines()
        assert steps[:2] == [
            f"1. library halab/node/steps/library.sh {PATHS['LIBRARY_DIR']}",
            "2. ready halab/node/steps/wait-ready.sh",
        ]
        assert (out / lb.name / "usr/local/lib/halab/lib.sh").read_text() == (NODE_STEPS / "lib.sh").read_text()
    for be in lab.backends:
        assert f"backend={be.name} " in (out / be.name / "var/www/halab/index.shtml").read_text()
        assert (out / be.name / "cloud-init/network-config").exists()


def test_render_cli_writes_the_upstream_routers_side_in_ecmp_mode(tmp_path):
    """An ecmp stack's review holds what the user's router needs (docs/ecmp.md), beside the nodes."""
    out = tmp_path / "out"
    p = _render_cli("ecmp", out)
    lab = lab_of("ecmp")
    assert sorted(d.name for d in out.iterdir()) == sorted(["_router", *(n.name for n in lab.nodes)])
    conf = (out / "_router" / PATHS["FRR_CONF"].lstrip("/")).read_text()
    assert conf == render.frr_router_conf(lab, Credentials.placeholder())
    assert f"maximum-paths {len(lab.load_balancers)}" in conf and "_router/" in p.stdout


def test_render_cli_reports_bad_config(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  halab:vip: 10.0.0.1\n  halab:vrrp:\n    routerId: 0\n")
    p = subprocess.run(
        [str(ROOT / "scripts/render"), "--config", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2
    assert "halab:vip: '10.0.0.1' is outside" in p.stderr and "halab:vrrp.routerId: 0" in p.stderr
    assert not Path(tmp_path / "o").exists()


def test_a_changed_script_or_node_file_runs_again_exactly_the_steps_that_use_it(tmp_path, monkeypatch):
    """A step's trigger is its bundle's digest. lib.sh, the step scripts and the static node files
    travel once per node, in its library step, and no other bundle carries them: each names
    them by sha256, so a change to one still changes the digest of every step that uses it (and
    of its node's library step), and of no other step."""
    import base64
    import shutil

    lab = lab_of("dev")

    def digests() -> dict[tuple[str, str], str]:
        step._library_names.cache_clear()  # what it read from the files, before a test changed one
        steps = {n.name: (*plan.host_steps(lab, n, CREDS), *plan.serving_steps(lab, n)) for n in lab.nodes}
        return {(node, s.name): s.digest() for node, ss in steps.items() for s in ss}

    before = digests()
    lib = (step.STEPS_DIR / "lib.sh").read_text()
    for node in lab.nodes:
        library, *others = (*plan.host_steps(lab, node, CREDS), *plan.serving_steps(lab, node))
        assert library.name == "library"
        for s in others:  # neither as text nor as base64
            assert lib not in s.bundle() and base64.b64encode(lib.encode())[:300].decode() not in s.bundle(), s.name
            assert len(s.bundle()) < len(lib), (node.name, s.name)
    steps_dir, node_dir = tmp_path / "steps", tmp_path / "node"
    shutil.copytree(step.STEPS_DIR, steps_dir)
    shutil.copytree(render.NODE_FILES, node_dir)
    monkeypatch.setattr(step, "STEPS_DIR", steps_dir)
    monkeypatch.setattr(render, "NODE_FILES", node_dir)
    try:
        assert digests() == before  # the same files elsewhere: nothing runs again

        def runs_again(path) -> set[tuple[str, str]]:
            original = path.read_text()
            path.write_text(original + "# changed\n")
            now = digests()
            path.write_text(original)
            return {k for k in before if now[k] != before[k]}

        backends, lbs = ("www1", "www2"), ("lb1", "lb2")
        assert runs_again(node_dir / "halab-routes") == {(b, s) for b in backends for s in ("library", "gateway")}
        assert runs_again(steps_dir / "lb-haproxy.sh") == {(lb, s) for lb in lbs for s in ("library", "haproxy")}
        assert runs_again(node_dir / "halab-haproxy-watch") == {
            (lb, s) for lb in lbs for s in ("library", "keepalived")
        }
        assert runs_again(steps_dir / "lb-serving.sh") == {(lb, s) for lb in lbs for s in ("library", "serving")}
        assert runs_again(steps_dir / "lib.sh") == set(before)
    finally:
        step._library_names.cache_clear()
