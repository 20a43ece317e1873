"""A change that replaces guests rolls out one load balancer, then one batch of backends, at a
time (halab/core/rolling.py, components/rollout.py): the order, as dependencies the engine honours,
and the gates that take a node out of service before its guest is deleted."""

from __future__ import annotations

import json

import pytest
from conftest import STACKS, engine_config

from halab.core import config, rolling, stackfile
from halab.drivers.program_runtime import Program, run_program
from halab.drivers.vmlab import schema

SECRETS = {"vrrpAuthPass": "pa55wd", "statsPassword": "stats-pa55word-long"}


def cfg_of(stack: str) -> tuple[dict[str, str], list[str]]:
    return engine_config(stackfile.load_stack_file(str(STACKS[stack])), **SECRETS)


def model_of(stack: str):
    return config.parse(stackfile.load_stack_file(str(STACKS[stack])))


def deployed_outputs(prog: Program) -> dict:
    return {k: v for k, v in prog.outputs.items() if k != "ssh_private_key"}


@pytest.fixture(scope="module")
def first() -> Program:
    return run_program(*cfg_of("dev"))


@pytest.fixture(scope="module")
def again(first) -> Program:
    """The same stack, once deployed: its last `up` exported its outputs."""
    return run_program(*cfg_of("dev"), previous=deployed_outputs(first))


def deps(prog: Program, name: str) -> set[str]:
    return {d.rsplit("::", 1)[-1] for d in prog.by_name(name).deps}


def test_backend_batches_leave_half_of_each_pool_serving():
    dev = model_of("dev")
    assert [[n.name for n in b] for b in rolling.backend_batches(dev)] == [["www1"], ["www2"]]
    large = model_of("large")  # five backends, three pools
    batches = rolling.backend_batches(large)
    assert sorted(n.name for b in batches for n in b) == sorted(n.name for n in large.backends)
    for batch in batches:
        for svc in large.services:
            pool = large.pool(svc)
            assert len([n for n in batch if n in pool]) <= max(1, len(pool) // 2), (svc.name, batch)


def test_load_balancers_roll_backups_first_and_the_preferred_master_last():
    dev = model_of("dev")
    assert [n.name for n in rolling.load_balancer_order(dev)] == ["lb2", "lb1"]


def test_on_the_first_up_every_guest_is_created_at_once(first):
    """Nothing serves yet: no domain waits for another node's gate."""
    for d in first.of_type("libvirt:index/domain:Domain"):
        assert not {x for x in deps(first, d.name) if "handoff" in x or "drain" in x}, d.name
    # and keepalived first starts on the preferred master
    assert "halab-lb1-keepalived" in deps(first, "halab-lb2-keepalived")


def test_once_deployed_each_guest_waits_for_the_gates_before_it(again):
    assert not {x for x in deps(again, "halab-lb2-vm-domain") if "handoff" in x or "drain" in x}
    assert "halab-lb2-handoff" in deps(again, "halab-lb1-vm-domain")
    assert "halab-lb1-handoff" in deps(again, "halab-www1-vm-domain")
    assert {"halab-lb1-drain-www1", "halab-lb2-drain-www1"} <= deps(again, "halab-www2-vm-domain")
    # the first start's keepalived order is gone: it would make a cycle with the roll-out's
    assert "halab-lb1-keepalived" not in deps(again, "halab-lb2-keepalived")


def test_a_gate_is_replaced_with_its_guest_only_and_runs_its_delete_there(again):
    """Its only trigger is the guest's domain ID: a new bundle is an update (create runs again,
    no delete), a new guest a replacement, whose delete the engine runs first."""
    for lb in ("lb1", "lb2"):
        handoff = again.by_name(f"halab-{lb}-handoff")
        assert handoff.inputs["triggers"] == [f"halab-{lb}-vm-domain-id"]
        assert "halab-" + lb + "-vm-domain" in deps(again, handoff.name)
        assert f"HALAB_GUEST_ID=halab-{lb}-vm-domain-id" in handoff.inputs["delete"]
        assert "HALAB_ON_DELETE=1" in handoff.inputs["delete"]
        for be in ("www1", "www2"):
            drain = again.by_name(f"halab-{lb}-drain-{be}")
            # not replaced with its load balancer: its delete would put every backend in
            # maintenance there, maybe before the hand-off; a new one runs its create again
            assert drain.inputs["triggers"] == [f"halab-{be}-vm-domain-id"]
            assert f"HALAB_BACKEND_ID=halab-{be}-vm-domain-id" in drain.inputs["delete"]
            assert f"HALAB_LB_ID=halab-{lb}-vm-domain-id" in drain.inputs["create"]
            assert f"halab-{lb}-vm-domain" in {d.rsplit("::", 1)[-1] for d in drain.property_deps["create"]}
            assert drain.inputs["connection"]["host"] == str(model_of("dev").node(lb).address)
            assert "HALAB_ON_DELETE=1" in drain.inputs["delete"]
            assert {f"halab-{lb}-keepalived", f"halab-{be}-tcp"} <= deps(again, drain.name)
    old = again.by_name("halab-lb1-handoff")
    new_bundle = {**old.inputs, "stdin": old.inputs["stdin"] + "# changed\n"}
    assert schema.plan(schema.COMMAND, old.inputs, new_bundle, old.replace_on_changes) == "update"
    new_guest = {**old.inputs, "triggers": ["another-domain-id"]}
    assert schema.plan(schema.COMMAND, old.inputs, new_guest, old.replace_on_changes) == "replace"


def test_a_removed_backends_drains_depend_on_it_so_are_deleted_first(first):
    """A removed node is deleted dependents first (the engine's ScheduleDeletes)."""
    cfg, secret = cfg_of("dev")
    backends = json.loads(cfg["halab:backends"])[:1]
    after = run_program({**cfg, "halab:backends": json.dumps(backends)}, secret, previous=deployed_outputs(first))
    gone = {r.name for r in first.regs} - {r.name for r in after.regs}
    assert {"halab-lb1-drain-www2", "halab-lb2-drain-www2", "halab-www2-vm-domain"} <= gone
    assert "halab-www2-tcp" in deps(first, "halab-lb1-drain-www2")


def test_previews_of_a_deployed_stack_keep_the_order():
    prog = run_program(*cfg_of("dev"), preview=True, previous={"load_balancers": {"lb1": "x"}})
    assert "halab-lb2-handoff" in deps(prog, "halab-lb1-vm-domain")
