"""The VM lab: `up` and `down` for the program's own resources on a libvirt that runs inside the
lab's namespaces (hypervisor.py), without the Pulumi engine (engine.py). Its `verify` and
`reboot` are the verifier's (halab/verify/lab_access.py, reboot.py).

The stack config is the user's `Pulumi.<stack>.yaml` with keys set as `pulumi config set`
would: `halab:image` and `halab:imageChecksum` (the cached Debian image and its sha512, image.py:
the program fetches and checks it as it would a download) and `halab:domainType` (qemu: this
kind of host has no usable KVM; kvm where it works). The secrets are made at the first `up`
and kept in the lab's state (0600), as `scripts/setup` keeps them in the stack.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from halab.core import config, stackfile
from halab.core.model import Credentials, Lab
from halab.drivers import host_packages, progress
from halab.drivers.netns.node import remove_tree
from halab.drivers.program_runtime import run_program
from halab.drivers.vmlab import hypervisor, image
from halab.drivers.vmlab.engine import COMMAND, LOCAL_COMMAND, Engine, State
from halab.drivers.vmlab.hypervisor import Hypervisor

STATE_ROOT = Path("/run/halab/vmlabs")
PROGRAM_CACHE = Path("/var/cache/halab/program")
COMMANDS = (
    "virsh",
    "libvirtd",
    "virtlogd",
    "qemu-system-x86_64",
    "mkisofs",
    "xsltproc",
    "ssh",
    "ssh-keygen",
    "nsenter",
    "ip",
)

Log = Callable[[str], None]


class LabError(RuntimeError):
    pass


def preflight() -> list[str]:
    """What this host lacks for the VM lab, each named; empty when it can run."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, libvirtd, loop devices): run it with sudo")
    missing += [f"command {c}" for c in COMMANDS + image.HOST_COMMANDS if shutil.which(c) is None]
    packages = host_packages.not_installed(host_packages.debian_packages("vmlab"))
    if packages:
        missing.append(f"packages {' '.join(packages)}: `scripts/setup --vm-lab` installs them, as root")
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        missing.append("user libvirt-qemu (apt-get install libvirt-daemon-system)")
    return missing


def state_dir(prefix: str) -> Path:
    return STATE_ROOT / prefix


def log_file(config_file: str) -> Path:
    """Every line of `up`, timestamped (halab.drivers.progress): in the lab's state, so `down` removes it."""
    return state_dir(_prefix(config_file)) / "up.log"


def _secrets(state: State) -> dict[str, str]:
    """The stack's secrets, made once (what scripts/setup sets with `pulumi config set --secret`)."""
    if "secrets" not in state.extra:
        state.extra["secrets"] = _secret_values(Credentials.generate())
        state.save()
    return state.extra["secrets"]


def _secret_values(creds: Credentials) -> dict[str, str]:
    return {"vrrpAuthPass": creds.vrrp_auth_pass, "statsPassword": creds.stats_password}


def stack_config(config_file: str, image_path: str, domain_type: str, secret_values: dict[str, str]):
    """(the engine's config map, its secret keys, the validated model): bad config fails here,
    before anything exists."""
    raw = stackfile.load_stack_file(config_file)
    if raw.get(f"{config.NS}:mode") == "ecmp":  # before the secrets, which are active-standby's
        raise config.ConfigError(
            [
                f"{config.NS}:mode 'ecmp': the VM lab does not run it yet (issue #24: its router, FRR in "
                "the lab's namespace on the host, is not built); the namespace lab does: "
                f"scripts/netns-lab up --config {config_file}"
            ]
        )
    raw[f"{config.NS}:image"] = image_path
    if (checksum := image.checksum()) is not None:  # None: not built yet (the check before `up`)
        raw[f"{config.NS}:imageChecksum"] = checksum
    raw[f"{config.NS}:domainType"] = domain_type
    model = config.parse(raw, secrets=secret_values)
    problems = []
    for hv in model.libvirt.hypervisors:
        if hv.uri != "qemu:///system":
            problems.append(f"{config.NS}:libvirtUri {hv.uri!r}: the VM lab runs one local libvirt (qemu:///system)")
    if model.network.mode == "bridge":
        problems.append(f"{config.NS}:network.mode 'bridge': the VM lab makes its own libvirt network (nat or route)")
    if problems:
        raise config.ConfigError(problems)
    return (*stackfile.engine_form(raw, secret_values), model)


@contextlib.contextmanager
def _program_cache() -> Iterator[None]:
    """The program's user cache (the checked image, each node's library file: components/cache.py)
    under /var/cache/halab with the lab's other caches, whoever runs the lab: the hypervisor's
    libvirtd reads the image from there, and has a /tmp of its own."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(PROGRAM_CACHE)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def _prefix(config_file: str) -> str:
    return config.parse(stackfile.load_stack_file(config_file)).network.name


def up(config_file: str, domain_type: str = "qemu", log: Log = print) -> dict[str, str]:
    """Creates (or converges) the lab; returns what was done to each resource by name."""
    started = time.monotonic()
    # every problem of the config named first, before anything exists (placeholder secrets: the
    # real ones are made with the state, below)
    fake = Credentials.placeholder()
    *_, model = stack_config(config_file, str(image.path()), domain_type, _secret_values(fake))
    prefix = model.network.name
    missing = preflight()
    if missing:
        raise LabError(
            "this host cannot run the VM lab (nothing was changed):\n" + "\n".join(f"  - {m}" for m in missing)
        )
    sdir = state_dir(prefix)
    hv = Hypervisor.attach(prefix)
    if hv is None or not hv.daemons_running():
        down(config_file, log=lambda _: None)  # leftovers of a failed or interrupted run
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / "config").write_text(str(Path(config_file).resolve()))
        log(f"vm-lab {prefix}: starting libvirtd in namespace {hypervisor.netns_name(prefix)}")
        hv = Hypervisor.start(prefix)
    state = State(sdir / "state.json")
    img = image.ensure(log)  # before the config: its checksum is one of its keys
    cfg, secret_keys, model = stack_config(config_file, str(img), domain_type, _secrets(state))
    engine = Engine(state, hv.run, hv.net_argv, log)
    for urn in engine.refresh():
        log(f"  ! {urn.rsplit('::', 1)[-1]}: gone from libvirt (refresh): it will be created again")
    log(f"vm-lab {prefix}: running the program ({len(model.nodes)} guests, image {img.name})")
    try:
        with _program_cache():
            program = run_program(cfg, secret_keys, recorder=engine)
    except Exception as e:
        raise LabError(_failure_report(engine, hv, model, e)) from None
    finally:
        _steps_output(engine, state, log)
    if engine.errors:
        raise LabError(_failure_report(engine, hv, model, None))
    engine.delete_unregistered()
    bad = engine.order_violations()
    if bad:
        raise LabError("resources were created out of dependency order:\n" + "\n".join(f"  - {b}" for b in bad))
    state.extra["outputs"] = program.outputs
    state.extra["domain_type"] = domain_type
    state.save()
    actions = {n: a for n, a in engine.actions().items() if a != "same"}
    log(f"vm-lab {prefix}: up in {time.monotonic() - started:.0f}s; {len(actions)} resources changed")
    return engine.actions()


def _steps_output(engine: Engine, state: State, log: Log) -> None:
    """What each Command that ran this time printed, from the state (the engine's lines say
    only that it ran): into a Progress's log whole, its warnings shown. A caller's own `log`
    gets the engine's lines alone, as before; a failed Command's output is in the error."""
    if not isinstance(log, progress.Progress):
        return
    ran = {name for name, action in engine.actions().items() if action != "same"}
    for e in list(state.entries.values()):
        name = e.urn.rsplit("::", 1)[-1]
        if e.type in (COMMAND, LOCAL_COMMAND) and name in ran:
            log.output(name, str(e.outputs.get("stdout") or ""), str(e.outputs.get("stderr") or ""))


def _failure_report(engine: Engine, hv: Hypervisor, model: Lab, exc: BaseException | None) -> str:
    """Every failed resource with its output, then the console of each guest one of them was for."""
    out = ["the program failed:"] + [f"  {e}" for e in engine.errors]
    if exc is not None and not engine.errors:
        out.append(f"  {type(exc).__name__}: {exc}")
    failed = [e.split(":", 1)[0] for e in engine.errors]  # resource names: halab-<node>-<what>
    for n in model.nodes:
        if any(f.startswith(f"halab-{n.name}-") for f in failed):
            domain = f"{model.network.name}-{n.name}"
            out.append(f"--- console of {domain} (last lines)\n{hv.console_log(domain)}")
    return "\n".join(out)


def loaded(config_file: str) -> tuple[Hypervisor, State, Lab, dict[str, Any]]:
    prefix = _prefix(config_file)
    hv = Hypervisor.attach(prefix)
    state = State(state_dir(prefix) / "state.json")
    if hv is None or "outputs" not in state.extra:
        raise LabError(f"vm-lab {prefix} is not up: run `up` first")
    _, _, model = stack_config(config_file, str(image.path()), state.extra.get("domain_type", "qemu"), _secrets(state))
    return hv, state, model, state.extra["outputs"]


def down(config_file: str, log: Log = print) -> list[str]:
    """`pulumi destroy` first, through the engine (dependents first, every Command's delete
    script run, their output in the log), where the lab's daemons still run; then removes the
    hypervisor node (and with it whatever is left: guests, volumes, network, daemons) and the
    state. Returns what is still left (nothing, unless something resisted)."""
    prefix = _prefix(config_file)
    hv = Hypervisor.attach(prefix)
    state_file = state_dir(prefix) / "state.json"
    if hv is not None and hv.daemons_running() and state_file.exists():
        try:
            Engine(State(state_file), hv.run, hv.net_argv, log).destroy()
        except Exception as e:  # a failed delete leaves the rest to the sweep, which removes all
            log(f"vm-lab {prefix}: destroy stopped ({str(e).splitlines()[0][:200]}): the sweep removes the rest")
    removed = hypervisor.destroy(prefix)
    remove_tree(state_dir(prefix), STATE_ROOT, STATE_ROOT.parent)
    log(f"vm-lab {prefix}: {'removed' if removed else 'nothing to remove'}")
    left = leftovers(prefix)
    for item in left:
        log(f"  left behind: {item}")
    return left


def leftovers(prefix: str) -> list[str]:
    """Anything of this VM lab still on the host: its namespace, mounts, QEMU processes, state."""
    ns = hypervisor.netns_name(prefix)
    out = []
    if Path(f"/run/netns/{ns}").exists():
        out.append(f"namespace {ns}")
    if any(ns in line for line in Path("/proc/self/mountinfo").read_text().splitlines()):
        out.append(f"mount of {ns}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and f"guest={prefix}-".encode() in b" ".join(cmdline):
            out.append(f"qemu process {pid}")
    if state_dir(prefix).exists():
        out.append(f"state {state_dir(prefix)}")
    return out
