"""The Pulumi program under Pulumi's mocks (halab/drivers/program_runtime.py): the resource graph it
declares, with no engine."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import STACKS, engine_config
from pulumi.output import Unknown

from halab.core import config, plan, stackfile
from halab.core.config import ConfigError
from halab.core.model import Credentials
from halab.drivers.program_runtime import SECRET_SIG, Mocks, Program, Recorder, run_program
from halab.drivers.vmlab import schema

COMMAND, COPY = "command:remote:Command", "command:remote:CopyToRemote"
VOLUME = "libvirt:index/volume:Volume"
ROOT = Path(__file__).resolve().parent.parent
AUTH_PASS = "pa55wd"
STATS_PASS = "stats-pa55word-long"


def stack_config(stack: str, **secrets: str) -> tuple[dict[str, str], list[str]]:
    """The stack file's `halab:` keys as the engine hands them to a program (JSON for objects)."""
    return engine_config(stackfile.load_stack_file(str(STACKS[stack])), **secrets)


@pytest.fixture(scope="module")
def dev() -> Program:
    return run_program(*stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS))


@pytest.fixture(scope="module")
def large() -> Program:
    return run_program(*stack_config("large", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS))


@pytest.fixture(scope="module")
def fast() -> Program:
    """examples/Pulumi.fast.yaml as shipped: VRRPv3, so no VRRP password."""
    return run_program(*stack_config("fast", statsPassword=STATS_PASS))


COMPONENTS = ("halab:index:Lab", "halab:index:LabNetwork", "halab:index:LoadBalancer", "halab:index:Backend")


@pytest.mark.parametrize(("stack", "lbs", "backends"), [("dev", 2, 2), ("large", 3, 5), ("fast", 2, 2)])
def test_resource_counts_follow_the_topology(stack, lbs, backends, request):
    prog: Program = request.getfixturevalue(stack)
    counts = Counter(r.type for r in prog.regs)
    nodes = lbs + backends
    lb_steps = len(plan.step_names(*_lb(stack)))
    be_steps = len(plan.step_names(*_be(stack)))
    assert counts["halab:index:Lab"] == 1
    assert counts["halab:index:LabNetwork"] == 1
    assert counts["halab:index:LoadBalancer"] == lbs
    assert counts["halab:index:Backend"] == backends
    assert counts["halab:index:Vm"] == nodes
    assert counts["pulumi:providers:libvirt"] == 1
    assert counts["libvirt:index/network:Network"] == 1
    # one shared base image + one root volume per VM
    assert counts["libvirt:index/volume:Volume"] == 1 + nodes
    assert counts["libvirt:index/cloudInitDisk:CloudInitDisk"] == nodes
    assert counts["libvirt:index/domain:Domain"] == nodes
    assert counts["tls:index/privateKey:PrivateKey"] == 1
    # and each load balancer's wait until it serves, after every node's steps; its roll-out
    # gates: its hand-off, and one drain per backend
    gates = lbs * (1 + backends)
    assert counts["command:remote:Command"] == lbs * (lb_steps + 1) + backends * be_steps + gates


def _model(stack):
    return config.parse(stackfile.load_stack_file(str(STACKS[stack])))


def _lb(stack):
    m = _model(stack)
    return m, m.load_balancers[0]


def _be(stack):
    m = _model(stack)
    return m, m.backends[0]


def test_every_resource_has_a_parent_and_components_own_their_children(large):
    by_urn = {r.urn: r for r in large.regs}
    lab = large.of_type("halab:index:Lab")[0]
    for r in large.regs:
        if r is lab:
            assert r.parent == "" or r.parent.endswith("ha-lb-lab-test"), r.urn
            continue
        assert r.parent in by_urn, f"{r.urn}: parent {r.parent!r} is not a lab resource"
    for r in large.of_type("libvirt:index/domain:Domain"):
        assert by_urn[r.parent].type == "halab:index:Vm", r.urn
    for r in large.of_type("command:remote:Command"):
        assert by_urn[r.parent].type in ("halab:index:LoadBalancer", "halab:index:Backend"), r.urn
    for r in large.of_type("halab:index:Vm"):
        assert by_urn[r.parent].type in ("halab:index:LoadBalancer", "halab:index:Backend"), r.urn


def test_libvirt_resources_use_the_configured_provider(large):
    (provider,) = large.of_type("pulumi:providers:libvirt")
    assert provider.inputs["uri"] == "qemu+ssh://ops@hv1.example.net/system", provider.urn
    for r in large.regs:
        if r.type.startswith("libvirt:"):
            assert r.provider.startswith(provider.urn), f"{r.urn}: provider {r.provider}"


def test_each_remote_command_connects_to_its_own_node(large):
    model = _model("large")
    for node in model.nodes:
        cmds = [r for r in large.of_type("command:remote:Command") if r.name.startswith(f"halab-{node.name}-")]
        serving = [s.name for s in plan.serving_steps(model, node)]
        gates = {s.name for s in plan.gate_steps(model, node)} if node.role == "lb" else set()
        names = [c.name.removeprefix(f"halab-{node.name}-") for c in cmds]
        assert [n for n in names if n not in gates] == [*plan.step_names(model, node), *serving]
        assert {n for n in names if n in gates} == gates
        copies = [r for r in large.of_type(COPY) if r.name.startswith(f"halab-{node.name}-")]
        assert [c.name for c in copies] == [f"halab-{node.name}-library-copy"]
        for c in cmds + copies:
            conn = c.inputs["connection"]
            assert conn["host"] == str(node.address), c.urn
            assert conn["user"] == "halab", c.urn
            # remote libvirt: SSH through the hypervisor, authenticated by the user's agent
            assert conn["proxy"]["host"] == "hv1.example.net", c.urn
            assert conn["proxy"]["user"] == "ops", c.urn
            if c.type == COMMAND:  # the library's runs the file its copy wrote, after its check
                assert re.search(f"(^|; )sudo env HALAB_GUEST={node.name} ", c.inputs["create"]), c.urn


def test_each_nodes_library_is_a_copied_file_of_which_the_state_keeps_the_hash(dev):
    """The library bundle (lib.sh, the step scripts, the static node files: 17 KB a node, twice
    in the state as a Command's stdin) travels as a file asset: the state holds its path and
    sha256. The file holds the very bytes a namespace-lab node runs, and the run checks them."""
    model = _model("dev")
    for node in model.nodes:
        copy = dev.by_name(f"halab-{node.name}-library-copy")
        run = dev.by_name(f"halab-{node.name}-library")
        library = plan.host_steps(model, node, Credentials.placeholder())[0]
        source = copy.inputs["source"]
        assert set(source) == {SECRET_SIG, "hash", "path"}, source  # no text: the bytes are not in it
        data = Path(source["path"]).read_bytes()
        assert data == library.bundle().encode() and source["hash"] == hashlib.sha256(data).hexdigest()
        assert copy.inputs["remotePath"] == f".cache/halab/library-{library.digest()}.sh"
        # the run: after its copy, again whenever it is copied again, and with nothing to carry
        assert copy.urn in run.deps and "stdin" not in run.inputs
        assert run.inputs["triggers"] == copy.inputs["triggers"] and library.digest() in run.inputs["triggers"]
    packed = "| gzip -dc | bash"  # the library's code, as a bundle would carry it (halab/core/step.py)
    assert not [c.name for c in dev.of_type(COMMAND) if packed in c.inputs.get("stdin", "")]


def test_the_library_runs_only_the_file_its_copy_wrote_and_keeps_no_older_one(dev, tmp_path):
    """The library Command's own script, run by bash in a home directory with a `sudo` that
    records what it is asked to run: another file under the copy's name is refused before
    anything runs; the right one runs, and the versions copied before it are removed."""
    run = dev.by_name("halab-www1-library")
    copied = Path(dev.by_name("halab-www1-library-copy").inputs["remotePath"])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sudo").write_text('#!/bin/sh\necho "sudo $*" >>"$HOME/sudo.log"\n')
    (bindir / "sudo").chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": f"{bindir}:/usr/bin:/bin"}

    def run_create() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", run.inputs["create"]], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    (tmp_path / copied).parent.mkdir(parents=True)
    (tmp_path / copied).write_text("echo another library\n")
    older = tmp_path / copied.parent / "library-0123.sh"
    older.write_text("echo an older library\n")
    p = run_create()
    assert p.returncode == 1 and "is not the library that was copied" in p.stderr, p
    assert not (tmp_path / "sudo.log").exists() and older.exists()
    (tmp_path / copied).write_bytes(Path(dev.by_name("halab-www1-library-copy").inputs["source"]["path"]).read_bytes())
    p = run_create()
    assert p.returncode == 0, p
    assert (tmp_path / "sudo.log").read_text() == f"sudo env HALAB_GUEST=www1 bash {copied}\n"
    assert not older.exists() and (tmp_path / copied).exists()


def test_a_run_keeps_only_the_library_files_it_wrote(tmp_path, monkeypatch):
    """The stack's cache directory holds this run's files, a stale one removed, another stack's kept."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mine, other = tmp_path / "halab/library/ha-lb-lab.test", tmp_path / "halab/library/ha-lb-lab.prod"
    for d in (mine, other):
        d.mkdir(parents=True)
        (d / "0123.sh").write_text("echo stale\n")
    prog = run_program(*stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS))
    used = {Path(c.inputs["source"]["path"]) for c in prog.of_type(COPY)}
    assert len(used) == 4 and set(mine.iterdir()) == used
    assert [p.name for p in other.iterdir()] == ["0123.sh"]


def test_the_ssh_agents_socket_is_not_in_the_state(monkeypatch, tmp_path):
    """A new login through a qemu+ssh:// host is a new SSH_AUTH_SOCK path: in any input, it
    would change every Command and re-run every step on every node. pulumi-command reads the
    variable itself (the jump host's key comes from the agent), so no input holds it."""
    cfg = stack_config("large", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    runs = []
    for login in ("ssh-AAAA", "ssh-BBBB"):
        (tmp_path / login).mkdir()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
            agent.bind(str(tmp_path / login / "agent.101"))
            agent.listen(1)
            monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / login / "agent.101"))
            prog = run_program(*cfg)
        assert login not in json.dumps([r.inputs for r in prog.regs])
        runs.append({r.urn: r.inputs for r in prog.of_type("command:remote:Command")})
    assert runs[0] == runs[1]


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_stack_previews(stack):
    """`pulumi preview` (and the first pass of every `pulumi up`) runs the program with the
    engine's unknowns: no ID, no generated key. It must register the same resources as an up,
    and the steps' triggers must wait on what is unknown instead of failing on it."""
    vrrp = {} if stack == "ecmp" else {"vrrpAuthPass": AUTH_PASS}  # ecmp mode refuses it: no VRRP
    cfg = stack_config(stack, statsPassword=STATS_PASS, **vrrp)
    preview = run_program(*cfg, preview=True)
    up = run_program(*cfg)
    assert sorted(r.urn for r in preview.regs) == sorted(r.urn for r in up.regs)
    # what the preview could not know, it did not make up: the guest's identity in every trigger
    for c in preview.of_type("command:remote:Command"):
        assert any(isinstance(t, Unknown) for t in c.inputs["triggers"]), c.urn
    for ci in preview.of_type("libvirt:index/cloudInitDisk:CloudInitDisk"):
        assert isinstance(ci.inputs["userData"], Unknown), ci.urn  # it authorises the generated key


def test_a_stale_ssh_agent_is_named_before_anything_is_created(monkeypatch, tmp_path):
    """pulumi-command dials SSH_AUTH_SOCK whenever it is set, even with a local URI and the
    program's own key, and fails every step at its first dial: the program refuses first."""
    cfg = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    stale = str(tmp_path / "agent.404")
    monkeypatch.setenv("SSH_AUTH_SOCK", stale)
    recorder = Recorder(Mocks())
    with pytest.raises(Exception, match=f"SSH_AUTH_SOCK={stale}: no SSH agent answers there") as e:
        run_program(*cfg, recorder=recorder)
    assert "env -u SSH_AUTH_SOCK" in str(e.value)
    assert recorder.regs == []
    # a live agent's socket, or none at all: the program goes on
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
        agent.bind(str(tmp_path / "agent.ok"))
        agent.listen(1)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.ok"))
        assert run_program(*cfg).of_type("libvirt:index/domain:Domain")
    monkeypatch.delenv("SSH_AUTH_SOCK")
    assert run_program(*cfg).of_type("libvirt:index/domain:Domain")


@pytest.mark.parametrize("stack", ["dev", "large"])
def test_no_input_is_one_the_provider_would_ignore(stack, request):
    """terraform-provider-libvirt v0.8.1 plans a change of a field inside a block (the root
    disk's volume, a NIC's network or MAC) as an update and then ignores it: `pulumi up`
    succeeds and the guest is unchanged. Every input the program gives a domain or the
    network is one the provider replaces on, or applies, or that `replace_on_changes` names."""
    prog: Program = request.getfixturevalue(stack)
    for r in prog.of_type(schema.DOMAIN) + prog.of_type(schema.NETWORK):
        for path, _ in schema.leaves(r.inputs):
            assert schema.kind(r.type, path) != "ignored" or schema.replaced_on(path, r.replace_on_changes), (
                f"{r.name}: a change of {path} would be planned as an update the provider ignores"
            )


def test_the_domains_hold_what_makes_a_new_network_replace_them_first(dev):
    """Another network mode or address range replaces the network (ForceNew, deleted first: its
    name stays). The engine then replaces, deleted before it, each dependent whose diff with the
    network's outputs unknown says replace (step_generator.go, calculateDependentReplacements;
    replaceOnChanges honoured there since 3.163.0, Pulumi.yaml's requiredPulumiVersion). What
    that rests on, asserted here (the order itself is the engine's): each domain's NIC takes the
    network's ID and `networkInterfaces` is in its replace_on_changes."""
    (net,) = dev.of_type(schema.NETWORK)
    assert net.delete_before_replace
    for d in dev.of_type(schema.DOMAIN):
        assert net.urn in d.deps and schema.replaced_on("networkInterfaces[0].networkId", d.replace_on_changes)


def test_the_root_disk_is_attached_as_a_file_for_apparmor(dev):
    """virt-aa-helper leaves a pool volume's backing chain out of the guest's AppArmor profile;
    the provider's own `file` disks are raw. The domain's XSLT makes the volume's disk (qcow2
    driver kept) a file disk at the volume's path, which is its key (the domain's volumeId)."""
    for d in dev.of_type(schema.DOMAIN):
        (disk,) = d.inputs["disks"]
        assert disk == {"volumeId": disk["volumeId"]}
        assert f'<source file="{disk["volumeId"]}"/>' in d.inputs["xml"]["xslt"], d.name


def test_pulumi_up_ends_when_every_load_balancer_serves(large):
    """The last Command on each load balancer waits until its haproxy calls every pool server
    UP, after every node's last step: `pulumi up` returns when a first request is served."""
    model = _model("large")
    last = {large.by_name(f"halab-{n.name}-{plan.step_names(model, n)[-1]}").urn for n in model.nodes}
    for lb in model.load_balancers:
        serving = large.by_name(f"halab-{lb.name}-serving")
        assert last <= set(serving.deps), serving.urn
        assert "bk_smtp/app5" in _unbundle(serving.inputs["stdin"])


def test_steps_run_in_order_and_start_after_the_vm(dev):
    model = _model("dev")
    for node in model.nodes:
        names = plan.step_names(model, node)
        first = dev.by_name(f"halab-{node.name}-{names[0]}")
        # depending on the Vm component means depending on every resource in it, the domain included
        domain = dev.by_name(f"halab-{node.name}-vm-domain")
        assert domain.urn in first.deps, first.urn
        for before, after in zip(names, names[1:], strict=False):
            later = dev.by_name(f"halab-{node.name}-{after}")
            assert dev.by_name(f"halab-{node.name}-{before}").urn in later.deps, later.urn


def test_keepalived_starts_on_the_preferred_master_first():
    """With the preferred node listed last (priority 200), each load balancer's keepalived step
    waits for the one of the next-higher priority, and the preferred one's waits for none: the
    first master is the one the config prefers, whatever the list order (nopreempt included)."""
    raw = stackfile.load_stack_file(str(STACKS["large"]))
    lbs = [dict(lb, priority=p) for lb, p in zip(raw["halab:loadBalancers"], (120, 110, 200), strict=True)]
    raw = {**raw, "halab:loadBalancers": lbs, "halab:vrrp": {**raw.get("halab:vrrp", {}), "preempt": False}}
    prog = run_program(*engine_config(raw, vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS))
    keepalived = {lb["name"]: prog.by_name(f"halab-{lb['name']}-keepalived") for lb in lbs}
    order = sorted(lbs, key=lambda lb: -lb["priority"])
    assert order[0]["name"] == lbs[-1]["name"]
    kept = {r.urn for r in keepalived.values()}
    assert not kept & set(keepalived[order[0]["name"]].deps)
    for higher, lower in zip(order, order[1:], strict=False):
        deps = set(keepalived[lower["name"]].deps) & kept
        assert deps == {keepalived[higher["name"]].urn}, lower["name"]


def test_backends_switch_gateway_only_after_every_load_balancer_is_configured(large):
    model = _model("large")
    last_lb_step = plan.step_names(model, model.load_balancers[0])[-1]
    lb_done = {large.by_name(f"halab-{lb.name}-{last_lb_step}").urn for lb in model.load_balancers}
    for be in model.backends:
        gw = large.by_name(f"halab-{be.name}-gateway")
        assert lb_done <= set(gw.deps), f"{gw.urn} does not wait for {lb_done - set(gw.deps)}"
        # and nothing else on the backend waits for the load balancers
        web = large.by_name(f"halab-{be.name}-web")
        assert not lb_done & set(web.deps), web.urn


def test_each_nodes_plan_is_built_once_with_its_real_credentials(monkeypatch):
    """The program builds a node's steps once, with the stack's own passwords, and keeps a step
    secret by its bundle: not once with placeholders and again for each secret step inside an
    apply, picked by its index (a reordered plan would then have run the wrong step)."""
    built: list[tuple[str, str]] = []
    real = plan.host_steps

    def counted(lab, host, creds):
        built.append((host.name, creds.vrrp_auth_pass))
        return real(lab, host, creds)

    monkeypatch.setattr(plan, "host_steps", counted)
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    run_program(cfg, secret)
    assert sorted(built) == sorted((n, AUTH_PASS) for n in ("lb1", "lb2", "www1", "www2")), built


def test_secrets_stay_secret(dev):
    carriers = {"keepalived": f"auth_pass {AUTH_PASS}", "secrets": f"HALAB_STATS_PASSWORD={STATS_PASS}"}
    for c in dev.of_type("command:remote:Command"):
        step = c.name.rsplit("-", 1)[1]
        if step in carriers:
            assert "stdin" in c.secret_inputs, f"{c.urn}: the bundle holds a password"
            assert "triggers" in c.secret_inputs, f"{c.urn}: a hash of a password is still the password"
            # the password does reach its file
            assert carriers[step] in _unbundle(c.inputs["stdin"]), c.urn
        else:
            # the files as the node gets them, decoded: base64 text would never show a password
            shown = c.inputs.get("stdin", "") + _unbundle(c.inputs.get("stdin", ""))
            assert AUTH_PASS not in shown and STATS_PASS not in shown, c.urn
            assert "stdin" not in c.secret_inputs, f"{c.urn}: needlessly secret, hides diffs from review"
    assert isinstance(dev.outputs["ssh_private_key"], str)
    # the generated key is the one secret output: `pulumi stack output` shows it only when asked
    assert dev.secret_outputs == {"ssh_private_key"}, dev.secret_outputs


def test_stats_and_metrics_urls_are_outputs(dev):
    assert dev.outputs["stats"] == {"lb1": "http://192.168.69.111:8404/", "lb2": "http://192.168.69.112:8404/"}
    assert dev.outputs["metrics"] == {
        "lb1": "http://192.168.69.111:8404/metrics",
        "lb2": "http://192.168.69.112:8404/metrics",
    }


def test_generated_ssh_key_is_authorised_and_its_private_half_is_secret(dev):
    for ci in dev.of_type("libvirt:index/cloudInitDisk:CloudInitDisk"):
        assert "ssh-ed25519 AAAAmockpublic halab" in ci.inputs["userData"], ci.urn
    for c in dev.of_type("command:remote:Command"):
        # the whole connection is secret once it holds the private key
        assert "connection" in c.secret_inputs, f"{c.urn}: the SSH private key would be stored in plain text"


def test_domains_get_static_addresses_and_no_lease_wait(dev):
    model = _model("dev")
    for node in model.nodes:
        d = dev.by_name(f"halab-{node.name}-vm-domain")
        (nic,) = d.inputs["networkInterfaces"]
        assert "addresses" not in nic, f"{d.urn}: would become a DHCP host entry on a network without DHCP"
        assert nic["mac"] == node.mac, d.urn
        ci = dev.by_name(f"halab-{node.name}-vm-cloudinit")
        assert f"- {node.address}/24" in ci.inputs["networkConfig"] and node.mac in ci.inputs["networkConfig"], ci.urn
        assert nic["waitForLease"] is False, d.urn
        assert d.inputs["type"] == "kvm" and d.inputs["name"] == f"halab-{node.name}", d.urn
    (net,) = dev.of_type("libvirt:index/network:Network")
    assert net.inputs["addresses"] == ["192.168.69.0/24"] and net.inputs["mode"] == "nat", net.urn
    assert net.inputs["dhcp"]["enabled"] is False, net.urn


def test_a_replaced_guest_gets_every_step_again(dev):
    """Finding 3: a step's triggers hold its guest's identity (the domain's ID, which a
    replacement changes), not only its bundle's hash."""
    for c in dev.of_type("command:remote:Command"):
        if "-drain-" in c.name or c.name.endswith("-handoff"):
            continue  # a roll-out gate: test_rolling.py
        node = c.name.split("-")[1]
        assert c.inputs["triggers"][1] == f"halab-{node}-vm-domain-id", c.name
        assert f"halab-{node}-vm-domain" in {d.rsplit("::", 1)[-1] for d in c.deps}, c.name


def test_named_libvirt_resources_are_deleted_before_their_replacement(dev):
    """The engine creates a replacement first by default; a libvirt name can exist only once."""
    for r in dev.of_type("libvirt:index/domain:Domain") + dev.of_type("libvirt:index/network:Network"):
        assert r.delete_before_replace, r.name


def test_a_new_cloud_init_disk_replaces_the_domain_and_is_a_new_instance():
    """Finding 8: the provider swaps a changed cloud-init ISO into the running domain, which never
    reads it. A new SSH key must give a new instance-id (cloud-init runs its users module
    again), a new disk (named by its content) and a replaced domain."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    keys = {}
    for key in ("ssh-ed25519 AAAAone a", "ssh-ed25519 AAAAtwo b"):
        prog = run_program(
            {**cfg, "halab:ssh": json.dumps({"publicKey": key}), "halab:sshPrivateKey": "k"},
            [*secret, "halab:sshPrivateKey"],
        )
        keys[key] = prog.by_name("halab-lb1-vm-cloudinit").inputs
        domain = prog.by_name("halab-lb1-vm-domain")
        assert "cloudinit" in domain.replace_on_changes and domain.delete_before_replace
    one, two = keys.values()
    assert one["metaData"] != two["metaData"] and "instance-id: lb1-" in one["metaData"]
    assert one["name"] != two["name"] and one["name"].startswith("halab-lb1-cloudinit-")


def test_a_new_image_or_disk_size_is_a_new_root_volume(dev):
    """Volume IDs are paths: content replaced under the same name would keep the ID, and the
    domain on it would never be replaced. Names carry what makes the volume instead."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)

    def names(**extra: str) -> tuple[str, str, str]:
        prog = run_program({**cfg, **extra}, secret)
        (base,) = [r for r in prog.of_type(VOLUME) if r.name.startswith("halab-base-image-")]
        return base.name, base.inputs["name"], prog.by_name("halab-lb1-vm-root").inputs["name"]

    urn, base, root = names()
    for other in ({"halab:image": "/var/cache/other.qcow2"}, {"halab:imageChecksum": "sha256:" + "0" * 64}):
        new_urn, new_base, new_root = names(**other)
        # another resource too: its ignored `source` never carries old bytes over (image.py)
        assert new_urn != urn and new_base != base and new_root != root, other
    same_urn, same_base, bigger_root = names(**{"halab:vm": json.dumps({"diskGiB": 20})})
    assert (same_urn, same_base) == (urn, base) and bigger_root != root


def test_each_roles_vm_size_overrides_the_default_key_by_key(dev):
    """`vm.loadBalancers` and `vm.backends` override `vm` key by key: a change to the load
    balancers' memory changes their domains only, so a roll-out replaces their guests only."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    vm = {"memoryMiB": 1536, "loadBalancers": {"memoryMiB": 1152}, "backends": {"vcpu": 2}}
    sized = run_program({**cfg, "halab:vm": json.dumps(vm)}, secret)
    lbs_only = run_program({**cfg, "halab:vm": json.dumps({"loadBalancers": {"memoryMiB": 1152}})}, secret)
    cases = (
        (dev, {"lb": (1, 1024), "www": (1, 1024)}),
        (sized, {"lb": (1, 1152), "www": (2, 1536)}),  # a role's own key, else vm's, not the default
        (lbs_only, {"lb": (1, 1152), "www": (1, 1024)}),
    )
    for prog, sizes in cases:
        for d in prog.of_type("libvirt:index/domain:Domain"):
            role = "lb" if d.name.startswith("halab-lb") else "www"
            assert (d.inputs["vcpu"], d.inputs["memory"]) == sizes[role], (d.name, d.inputs["memory"])
    for www in ("halab-www1-vm-domain", "halab-www1-vm-root"):  # the backends' guests as they were
        assert lbs_only.by_name(www).inputs == dev.by_name(www).inputs, www


def test_the_base_volume_is_made_from_the_checked_file_after_its_fetch(dev, tmp_path):
    """The default image (a dated Debian 13 build) is fetched by a local Command that checks its
    sha512 (components/fetch-image.sh; its behaviour: tests/test_fetch_image.py), and the base
    volume is made from the checked file, after it: the provider would check nothing. The
    file's path is in the user's cache, so `source` is ignored (another user's `up` must not
    replace every guest). A local image without a checksum is used as it is."""
    fetch = dev.by_name("halab-image-fetch")
    env = fetch.inputs["environment"]
    assert env["HALAB_IMAGE"] == config.DEBIAN_13_IMAGE and env["HALAB_CHECKSUM"] == config.DEBIAN_13_CHECKSUM
    assert fetch.inputs["create"] == (ROOT / "components/fetch-image.sh").read_text()
    assert fetch.inputs["interpreter"] == ["/bin/bash", "-c"]
    (base,) = [r for r in dev.of_type(VOLUME) if r.name.startswith("halab-base-image-")]
    assert base.inputs["source"] == env["HALAB_CACHED"] and fetch.urn in base.deps
    assert base.ignore_changes == ["source"]
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    own = run_program({**cfg, "halab:image": "/srv/images/mine.qcow2"}, secret)
    assert not own.of_type("command:local:Command")
    (base,) = [r for r in own.of_type(VOLUME) if r.name.startswith("halab-base-image-")]
    assert base.inputs["source"] == "/srv/images/mine.qcow2" and base.deps == []


def test_domains_use_graphics_every_qemu_build_has(dev):
    """Finding 7: without a graphics block the provider adds SPICE, which some QEMU builds lack."""
    for d in dev.of_type("libvirt:index/domain:Domain"):
        assert d.inputs["graphics"] == {"type": "vnc", "listenType": "none", "autoport": True}, d.name


def test_stack_outputs(dev):
    assert dev.outputs["vip"] == "192.168.69.110"
    assert dev.outputs["load_balancers"] == {"lb1": "192.168.69.111", "lb2": "192.168.69.112"}
    assert dev.outputs["backends"] == {"www1": "192.168.69.106", "www2": "192.168.69.107"}
    assert dev.outputs["urls"] == {"http": "http://192.168.69.110/", "https": "https://192.168.69.110/"}
    assert set(dev.outputs["ssh"]) == {"lb1", "lb2", "www1", "www2"}
    assert "halab@192.168.69.111" in dev.outputs["ssh"]["lb1"]


def test_large_outputs_name_the_extra_service_and_the_jump_host(large):
    assert large.outputs["urls"] == {
        "http": "http://10.42.8.10/",
        "https": "https://10.42.8.10/",
        "smtp": "tcp://10.42.8.10:2525/",
        "admin": "https://10.42.8.10:8443/",
    }
    assert "-J ops@hv1.example.net" in large.outputs["ssh"]["app1"]


def test_changing_one_backend_changes_only_the_bundles_that_carry_it():
    """Triggers are content hashes: adding a backend re-runs each LB's haproxy step only."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    before = {r.name: r.inputs["triggers"] for r in run_program(cfg, secret).of_type("command:remote:Command")}
    backends = json.loads(cfg["halab:backends"]) + [{"name": "www3", "address": "192.168.69.108"}]
    after_prog = run_program({**cfg, "halab:backends": json.dumps(backends)}, secret)
    after = {r.name: r.inputs["triggers"] for r in after_prog.of_type("command:remote:Command")}
    changed = sorted(n for n in before if before[n] != after[n])
    # and the wait until the lab serves, which runs again whenever a step of the lab does
    assert changed == ["halab-lb1-haproxy", "halab-lb1-serving", "halab-lb2-haproxy", "halab-lb2-serving"]
    new_steps = ("gateway", "library", "packages", "ready", "sysctl", "tcp", "web")
    drains = ["halab-lb1-drain-www3", "halab-lb2-drain-www3"]  # its roll-out gates
    assert sorted(set(after) - set(before)) == drains + [f"halab-www3-{s}" for s in new_steps]


def test_a_step_run_again_for_its_content_runs_the_serving_steps_again():
    """Another VRRP timer changes only the load balancers' keepalived steps (their bundles):
    the serving steps run again after them, so that `up` ends when the lab serves."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    before = {r.name: r.inputs["triggers"] for r in run_program(cfg, secret).of_type("command:remote:Command")}
    after_prog = run_program({**cfg, "halab:vrrp": json.dumps({"advertInterval": 2})}, secret)
    after = {r.name: r.inputs["triggers"] for r in after_prog.of_type("command:remote:Command")}
    changed = sorted(n for n in before if before[n] != after[n])
    assert changed == ["halab-lb1-keepalived", "halab-lb1-serving", "halab-lb2-keepalived", "halab-lb2-serving"]


def test_adding_a_backend_to_one_pool_changes_only_the_haproxy_steps():
    """A web backend added to the web pool (tests/stacks/Pulumi.pools.yaml): the load balancers'
    haproxy steps re-run, every other step of every node stays, and the only new resources are
    the new backend's (its VM and its steps)."""
    cfg, secret = stack_config("pools", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    before_prog = run_program(cfg, secret)
    backends = json.loads(cfg["halab:backends"]) + [{"name": "web-3", "address": "10.78.0.23"}]
    services = json.loads(cfg["halab:services"])
    for svc in services:
        if svc.get("backends") == ["web-1", "web-2"]:
            svc["backends"].append("web-3")
    after_prog = run_program(
        {**cfg, "halab:backends": json.dumps(backends), "halab:services": json.dumps(services)}, secret
    )
    triggers = [
        {r.name: r.inputs["triggers"] for r in p.of_type("command:remote:Command")} for p in (before_prog, after_prog)
    ]
    changed = sorted(n for n in triggers[0] if triggers[0][n] != triggers[1][n])
    assert changed == ["halab-lb1-haproxy", "halab-lb1-serving", "halab-lb2-haproxy", "halab-lb2-serving"]
    new = sorted({r.name for r in after_prog.regs} - {r.name for r in before_prog.regs})
    gates = {f"halab-{lb}-drain-web-3" for lb in ("lb1", "lb2")}
    assert new and all(n == "halab-web-3" or n.startswith("halab-web-3-") or n in gates for n in new), new
    assert gates <= set(new)
    # the new server is in the web pool's services and the one served by every backend
    (cmd,) = (r for r in after_prog.regs if r.name == "halab-lb1-haproxy")
    cfg_text = _unbundle(cmd.inputs["stdin"])
    assert cfg_text.count("server web-3 ") == 3 and "server mail-1 " in cfg_text  # http, https, status
    for block in cfg_text.split("\nbackend ")[1:]:
        assert ("server web-3 " in block) == block.startswith(("bk_http\n", "bk_https\n", "bk_status\n")), block[:20]


def test_a_key_without_the_halab_namespace_is_refused_not_ignored():
    """`pulumi config set vip ...` writes ha-lb-lab:vip (the project's namespace): the program
    names it instead of deploying the defaults without it."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    recorder = Recorder(Mocks())
    with pytest.raises(Exception) as err:
        run_program({**cfg, "ha-lb-lab:vip": "192.168.69.120"}, secret, recorder)
    assert "ha-lb-lab:vip: this project reads halab:<key>: pulumi config set halab:vip ..." in str(err.value)
    assert recorder.regs == []
    # listed with the config's other problems, in one pass
    with pytest.raises(Exception) as err:
        run_program({**cfg, "ha-lb-lab:vip": "192.168.69.120", "halab:vip": "10.9.9.9"}, secret, Recorder(Mocks()))
    assert "ha-lb-lab:vip: this project reads" in str(err.value) and "halab:vip: '10.9.9.9'" in str(err.value)


def test_bad_config_fails_before_any_resource_is_created():
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    cfg["halab:vip"] = "10.9.9.9"
    cfg["halab:loadBalancers"] = json.dumps([{"name": "lb1", "address": "192.168.69.111"}])
    recorder = Recorder(Mocks())
    with pytest.raises(Exception) as err:
        run_program(cfg, secret, recorder)
    assert "halab:vip: '10.9.9.9' is outside halab:network.cidr 192.168.69.0/24" in str(err.value)
    assert "halab:loadBalancers: " in str(err.value) and "needs at least 2 entries" in str(err.value)
    assert recorder.regs == [], "resources were registered before the config was validated"


def test_missing_or_plain_text_vrrp_password_is_refused():
    cfg, _ = stack_config("dev")
    with pytest.raises(Exception, match="halab:vrrpAuthPass: None is required") as err:
        run_program(cfg, [])
    assert "halab:statsPassword: None is required for the stats page" in str(err.value)
    with pytest.raises(Exception, match="must be stored encrypted"):
        run_program({**cfg, "halab:vrrpAuthPass": "plain"}, [])
    with pytest.raises(Exception, match=r"1-8 printable characters without spaces \(it has 12\)") as err:
        run_program(*stack_config("dev", vrrpAuthPass="twelve-chars", statsPassword=STATS_PASS))
    assert "twelve-chars" not in str(err.value)


def _unbundle(bundle: str) -> str:
    """The files a step bundle carries, as the node receives them: text in plain heredocs, a
    file with a NUL byte in base64 (halab/core/step.py `_staged`)."""
    import base64
    import re

    found = re.findall(r"^(cat|base64 -d) >\S+ <<'(HALAB_EOF\w*)'\n(.*?)^\2$", bundle, flags=re.S | re.M)
    return "\n".join(base64.b64decode(body).decode() if cmd == "base64 -d" else body for cmd, _, body in found)


def test_config_error_type_is_what_main_reports():
    with pytest.raises(ConfigError):
        config.parse({"halab:vip": "nope"})


def test_own_ssh_key_pair_is_used_and_not_exported():
    cfg, secret = stack_config(
        "dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS, sshPrivateKey="-----BEGIN OWN KEY-----"
    )
    cfg["halab:ssh"] = json.dumps({"user": "ops", "publicKey": "ssh-ed25519 AAAAown ops@laptop"})
    prog = run_program(cfg, secret)
    assert prog.of_type("tls:index/privateKey:PrivateKey") == []
    assert "ssh_private_key" not in prog.outputs
    for ci in prog.of_type("libvirt:index/cloudInitDisk:CloudInitDisk"):
        assert "ssh-ed25519 AAAAown ops@laptop" in ci.inputs["userData"] and "name: ops" in ci.inputs["userData"]
    for c in prog.of_type("command:remote:Command"):
        assert c.inputs["connection"]["privateKey"] == "-----BEGIN OWN KEY-----", c.urn
        assert c.inputs["connection"]["user"] == "ops" and "connection" in c.secret_inputs, c.urn


def test_two_hypervisors_one_provider_and_base_image_each():
    """HA across hypervisors: each node is created through its own host's provider, on a bridge
    (no libvirt network), and SSH reaches it through its own host."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    del cfg["halab:libvirtUri"]
    placement = {"lb1": "hv1", "lb2": "hv2", "www1": "hv1", "www2": "hv2"}
    cfg["halab:libvirtHosts"] = json.dumps({"hv1": "qemu+ssh://ops@hv1/system", "hv2": "qemu+ssh://ops@hv2/system"})
    cfg["halab:network"] = json.dumps(
        {"name": "halab", "cidr": "192.168.69.0/24", "mode": "bridge", "bridge": "br-lab", "gateway": "192.168.69.254"}
    )
    for key in ("halab:loadBalancers", "halab:backends"):
        cfg[key] = json.dumps([{**n, "hypervisor": placement[n["name"]]} for n in json.loads(cfg[key])])
    prog = run_program(cfg, secret)
    providers = {r.name: r for r in prog.of_type("pulumi:providers:libvirt")}
    assert {n: p.inputs["uri"] for n, p in providers.items()} == {
        "halab-libvirt-hv1": "qemu+ssh://ops@hv1/system",
        "halab-libvirt-hv2": "qemu+ssh://ops@hv2/system",
    }
    assert prog.of_type("libvirt:index/network:Network") == []
    bases = {r.name.rsplit("-", 1)[1]: r for r in prog.of_type(VOLUME) if "base-image" in r.name}
    assert sorted(bases) == ["hv1", "hv2"]
    for node, hv in placement.items():
        for r in prog.regs:
            if r.type.startswith("libvirt:") and r.name.startswith(f"halab-{node}-"):
                assert r.provider.startswith(providers[f"halab-libvirt-{hv}"].urn), f"{r.urn} is not on {hv}"
        (nic,) = prog.by_name(f"halab-{node}-vm-domain").inputs["networkInterfaces"]
        assert nic["bridge"] == "br-lab" and "networkId" not in nic
        assert prog.by_name(f"halab-{node}-ready").inputs["connection"]["proxy"]["host"] == hv
        assert f"-J ops@{hv} " in prog.outputs["ssh"][node]


def test_the_program_runs_without_the_collector_and_the_mocks_restore_the_processs():
    """__main__.py turns the cyclic collector off while it builds the graph (it rescanned the
    graph and freed next to nothing: docs/benchmarks.md); run_program turns it back on for this
    process, which goes on running tests."""
    import gc

    seen: list[bool] = []

    class Watching(Mocks):
        def new_resource(self, args):
            seen.append(gc.isenabled())
            return super().new_resource(args)

    assert gc.isenabled()
    run_program(*stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS), Recorder(Watching()))
    assert seen and not any(seen), seen
    assert gc.isenabled()


def _plan_commands(prog: Program) -> dict[str, dict]:
    """The inputs of every Command that runs one of the plan's steps (host_steps, serving_steps),
    by name (halab-<node>-<step>): not the roll-out's gates."""
    model = _model("dev")
    steps = {s for n in model.nodes for s in plan.step_names(model, n)} | {"serving"}
    return {r.name: r.inputs for r in prog.of_type("command:remote:Command") if r.name.split("-", 2)[2] in steps}


def test_a_preview_of_an_added_backend_shows_the_new_server_lines_in_plain_text():
    """`pulumi preview --diff` shows each changed input: a backend added to the dev stack changes
    each load balancer's haproxy step by exactly the new backend's lines of its rendered files
    (haproxy.cfg's `server` lines, and the lines that start them DOWN), readable, not base64;
    the serving step's list of servers; and no other step of any node."""
    cfg, secret = stack_config("dev", vrrpAuthPass=AUTH_PASS, statsPassword=STATS_PASS)
    backends = json.loads(cfg["halab:backends"]) + [{"name": "www3", "address": "192.168.69.108"}]
    before = _plan_commands(run_program(cfg, secret))
    after = _plan_commands(run_program({**cfg, "halab:backends": json.dumps(backends)}, secret))
    changed = sorted(n for n in before if before[n] != after[n])
    assert changed == ["halab-lb1-haproxy", "halab-lb1-serving", "halab-lb2-haproxy", "halab-lb2-serving"]
    for name in changed:
        assert {k for k in before[name] if before[name][k] != after[name][k]} == {"stdin", "triggers"}, name
    for lb in ("lb1", "lb2"):
        diff = list(
            difflib.unified_diff(
                before[f"halab-{lb}-haproxy"]["stdin"].splitlines(),
                after[f"halab-{lb}-haproxy"]["stdin"].splitlines(),
                lineterm="",
                n=0,
            )
        )
        lines = [d for d in diff if not d.startswith(("---", "+++", "@@"))]
        assert lines == [
            "+    server www3 192.168.69.108:80 check observe layer4 error-limit 3 on-error mark-down",
            "+    server www3 192.168.69.108:443 check check-ssl verify none observe layer4 error-limit 3 on-error"
            " mark-down",
            "+0 bk_http 0 www3 192.168.69.108 0 0 1 1 0 1 0 0 0 0 0 0 - 80 -",
            "+0 bk_https 0 www3 192.168.69.108 0 0 1 1 0 1 0 0 0 0 0 0 - 443 -",
        ], lines
    assert sorted(set(after) - set(before)) == [f"halab-www3-{s}" for s in sorted(plan.step_names(*_be("dev")))]
