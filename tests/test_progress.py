"""What `up` shows (halab/drivers/progress.py): one line per node and step with its time, warnings and
errors in full, the same lines on a terminal and off one, every line in the log file; and the
namespace lab's `configure` and the VM lab's step outputs report through it, while a caller's
own `log` still gets every line. No lab: the nodes and the engine are stand-ins."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, STACKS

from halab.core import config, plan, stackfile
from halab.drivers import progress
from halab.drivers.netns import lab, topology
from halab.drivers.progress import Progress, row
from halab.drivers.vmlab import lab as vmlab
from halab.drivers.vmlab.engine import COMMAND, Entry, State
from halab.node.paths import PATHS

# What a backend's `web` step printed on stderr where make-ssl-cert ran without
# DEBIAN_FRONTEND (12 lines of the dev stack's `up`), and what haproxy says when it starts.
DEBCONF = [
    "debconf: unable to initialize frontend: Dialog",
    "debconf: (TERM is not set, so the dialog frontend is not usable.)",
    "debconf: falling back to frontend: Readline",
    "debconf: unable to initialize frontend: Readline",
    "debconf: (This frontend requires a controlling tty.)",
    "debconf: falling back to frontend: Teletype",
]
NOTICES = [
    "[NOTICE]   (4240) : haproxy version is 2.6.12-1+deb12u4",
    "[NOTICE]   (4240) : path to executable is /usr/sbin/haproxy",
    "[NOTICE]   (4240) : New worker (4242) forked",
]


def clock(step: float = 0.5):
    """A clock that moves `step` seconds each time it is read: every step takes exactly that."""
    t = [0.0]

    def now() -> float:
        t[0] += step
        return t[0]

    return now


def sink(tmp_path: Path, tty: bool) -> tuple[Progress, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    p = Progress(tmp_path / "state" / "up.log", out=out, err=err, tty=tty, title="netns-lab up", clock=clock())
    return p, out, err


def a_dev_up(p: Progress) -> None:
    """Events as the dev stack's `up` makes them: quiet steps, noisy ones, a warning, a failure."""
    p.note("lab halab: creating 9 namespaces")
    p.started("lb1", "sysctl")
    p.finished("lb1", "sysctl", stdout=f"[lb1/sysctl] installed {PATHS['LB_SYSCTL_CONF']}\n"
               f"[lb1/sysctl] 5 settings in force from {PATHS['LB_SYSCTL_CONF']}\n")  # fmt: skip
    p.started("lb1", "haproxy")
    p.finished(
        "lb1",
        "haproxy",
        stdout=f"[lb1/haproxy] installed {PATHS['HAPROXY_CFG']}\n[lb1/haproxy] starting haproxy\n"
        "[lb1/haproxy] haproxy running (4242)\n",
        stderr="\n".join(NOTICES) + "\n",
    )
    p.started("www1", "web")
    p.finished("www1", "web", stdout="[www1/web] apache2 serving ports: 80 443\n", stderr="\n".join(DEBCONF))
    p.started("www2", "ready")
    p.finished("www2", "ready", stdout="[www2/ready] warning: cloud-init finished with module errors: locale\n"
               "[www2/ready] node ready: www2\n")  # fmt: skip
    p.started("www2", "tcp")
    p.finished("www2", "tcp")  # said nothing
    p.started("lb2", "keepalived")
    p.finished(
        "lb2",
        "keepalived",
        ok=False,
        code=1,
        stdout=f"[lb2/keepalived] installed {PATHS['KEEPALIVED_NOTIFY']}\n",
        stderr="[lb2/keepalived] error: staged keepalived.conf is invalid (keepalived -t)\n",
    )


SHOWN = [
    "lab halab: creating 9 namespaces",
    f"  lb1        sysctl       0.5 s  ok  5 settings in force from {PATHS['LB_SYSCTL_CONF']}",
    "  lb1        haproxy      0.5 s  ok  haproxy running (4242)",
    "  www1       web          0.5 s  ok  apache2 serving ports: 80 443",
    "  www2       ready        0.5 s  ok  node ready: www2",
    "  ! www2 ready: [www2/ready] warning: cloud-init finished with module errors: locale",
    "  www2       tcp          0.5 s  ok",
    "  lb2        keepalived   0.5 s  FAILED (exit 1)",
    f"    [lb2/keepalived] installed {PATHS['KEEPALIVED_NOTIFY']}",
    "    stderr: [lb2/keepalived] error: staged keepalived.conf is invalid (keepalived -t)",
]


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw`: a carriage return goes back to the line's start, and
    what follows overwrites it."""
    lines, cur, col = [], [], 0
    for ch in raw:
        if ch == "\n":
            lines.append("".join(cur).rstrip())
            cur, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(cur):
                cur[col] = ch
            else:
                cur.append(ch)
            col += 1
    if "".join(cur).strip():
        lines.append("".join(cur).rstrip())
    return lines


def test_warnings_are_told_from_noise():
    for line in DEBCONF + NOTICES + ["debconf: delaying package configuration, since apt-utils is not installed"]:
        assert not progress.is_warning(line, stderr=True), line
    for line in (
        "[WARNING]  (4240) : config : missing timeouts for backend 'b'.",
        "[ALERT]    (4240) : config : Fatal errors found in configuration.",
        "W: Some index files failed to download. They have been ignored, or old ones used instead.",
        "E: Unable to locate package haproxy",
        "[lb1/haproxy] error: staged haproxy.cfg is invalid (haproxy -c):",
    ):
        assert progress.is_warning(line, stderr=True), line
    # on stdout, only what a step marks itself: apt names packages such as libgpg-error-l10n
    assert progress.is_warning("[www2/ready] warning: cloud-init finished with module errors", stderr=False)
    assert not progress.is_warning("Unpacking libgpg-error-l10n (1.46-1) ...", stderr=False)
    assert not progress.is_warning(f"[lb1/haproxy] installed {PATHS['HAPROXY_CFG']}", stderr=False)


def test_off_a_terminal_one_line_per_step_and_warnings_and_failures_in_full(tmp_path):
    p, out, err = sink(tmp_path, tty=False)
    a_dev_up(p)
    p.close()
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == [*SHOWN, f"full log: {tmp_path / 'state' / 'up.log'}"]
    assert err.getvalue() == ""


def test_on_a_terminal_the_running_step_is_replaced_by_its_line(tmp_path):
    p, out, _ = sink(tmp_path, tty=True)
    p.started("lb1", "haproxy")
    assert out.getvalue() == row("lb1", "haproxy", "  ...  running")  # no newline: its result replaces it
    p.note("something said while it runs")
    assert screen(out.getvalue()) == ["something said while it runs", row("lb1", "haproxy", "  ...  running")]
    p.finished("lb1", "haproxy", stdout="[lb1/haproxy] haproxy running (4242)\n")
    assert screen(out.getvalue()) == ["something said while it runs", SHOWN[2]]

    p, out, _ = sink(tmp_path / "again", tty=True)
    a_dev_up(p)
    p.close()
    raw = out.getvalue()
    assert raw.count("running\r") == 6  # each step was shown running, then its line replaced it
    assert screen(raw) == [*SHOWN, f"full log: {tmp_path / 'again' / 'state' / 'up.log'}"]


def test_on_a_terminal_steps_running_at_once_get_whole_lines_only(tmp_path):
    p, out, _ = sink(tmp_path, tty=True)
    p.started("halab-lb1-ready", "create")
    p.started("halab-lb2-ready", "create")
    assert screen(out.getvalue()) == []  # neither line can be the one the cursor is on
    p.finished("halab-lb1-ready", "create")
    assert screen(out.getvalue()) == [
        row("halab-lb1-ready", "create", "  1.0 s  ok"),
        row("halab-lb2-ready", "create", "  ...  running"),
    ]


def test_the_log_file_keeps_every_line_stamped_and_is_named_at_the_end(tmp_path):
    p, out, _ = sink(tmp_path, tty=False)
    path = tmp_path / "state" / "up.log"
    p.error("netns-lab: this host cannot run the lab (nothing was changed)")
    assert not path.exists() and not path.parent.exists()  # a run that failed first makes nothing
    a_dev_up(p)
    p.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    kept = path.read_text().splitlines()
    assert all(line[:4].isdigit() and line[10] == " " for line in kept), kept[:3]  # 2026-12-05 15:10:57.123 ...
    text = [line.split(" ", 2)[2] for line in kept]
    assert text[0] == "=== netns-lab up"
    for line in DEBCONF + NOTICES:  # the noise is not shown, and not lost
        assert row("www1", "web", f"stderr: {line}") in text or row("lb1", "haproxy", f"stderr: {line}") in text, line
    assert row("lb1", "haproxy", f"[lb1/haproxy] installed {PATHS['HAPROXY_CFG']}") in text
    assert row("lb1", "haproxy", "started") in text
    results = [line for line in SHOWN if " s  " in line or not line.startswith(" ")]  # notes, step lines
    assert len(results) == 7 and all(line in text for line in results), [x for x in results if x not in text]
    assert out.getvalue().splitlines()[-1] == f"full log: {path}"

    # a log the lab's `down` removed (a failed run cleans up after itself) is not named
    q, out, _ = sink(tmp_path / "gone", tty=False)
    q.note("lab halab: creating 9 namespaces")
    (tmp_path / "gone" / "state" / "up.log").unlink()
    q.close()
    assert "full log" not in out.getvalue()


# -- the namespace lab's configure, on stand-in nodes ------------------------------------------


class FakeNode:
    """A running node whose steps answer with canned output (`answers`, by step; an exit code
    of 1 where `fails`), recording what ran in `ran`."""

    def __init__(self, name: str, steps: dict[str, tuple[str, str]], ran: list, answers: dict, fails: set):
        self.name, self.steps, self.ran, self.answers, self.fails = name, steps, ran, answers, fails

    def run_bundle(self, bundle: str, *, check: bool = True, env=None) -> subprocess.CompletedProcess[str]:
        host, step = self.steps[bundle]
        assert host == self.name, f"{host}'s step {step} ran on {self.name}"
        self.ran.append((host, step))
        stdout, stderr = self.answers.get((host, step), (f"[{host}/{step}] done {step}\n", ""))
        return subprocess.CompletedProcess(["bash", "-s"], int((host, step) in self.fails), stdout, stderr)


@pytest.fixture
def dev(tmp_path, monkeypatch):
    """The dev stack's topology, its state under tmp_path, and stand-ins for its nodes."""
    monkeypatch.setattr(lab, "STATE_ROOT", tmp_path / "labs")
    topo = topology.build(config.parse(stackfile.load_stack_file(str(STACKS["dev"]))))
    creds = lab.credentials(topo)
    steps = {}
    for n in topo.lab.nodes:
        for s in (*plan.host_steps(topo.lab, n, creds), *plan.serving_steps(topo.lab, n)):
            steps[s.bundle()] = (n.name, s.name)
        for s in plan.gate_steps(topo.lab, n) if n.role == "lb" else ():
            steps[s.bundle()] = (n.name, s.name)
    ran: list[tuple[str, str]] = []
    answers = {
        ("lb1", "haproxy"): (
            "[lb1/haproxy] starting haproxy\n[lb1/haproxy] haproxy running (4242)\n",
            "\n".join(NOTICES),
        ),
        ("www1", "web"): ("[www1/web] apache2 serving ports: 80 443\n", "\n".join(DEBCONF)),
        ("www2", "ready"): ("[www2/ready] warning: cloud-init finished with module errors: locale\n", ""),
        ("www2", "tcp"): ("", ""),
    }
    fails: set[tuple[str, str]] = set()
    running = {h.name: FakeNode(h.name, steps, ran, answers, fails) for h in topo.hosts}
    return SimpleNamespace(topo=topo, running=running, ran=ran, all=set(steps.values()), fails=fails)


def test_configure_shows_a_line_per_step_and_keeps_every_line(dev, tmp_path):
    out = io.StringIO()
    p = Progress(lab.log_file(dev.topo), out=out, tty=False, clock=clock())
    lab.configure(dev.topo, dev.running, log=p)
    p.close()
    assert sorted(dev.ran) == sorted(dev.all)  # every step of every node, once
    said = {("lb1", "haproxy"): "haproxy running (4242)", ("www1", "web"): "apache2 serving ports: 80 443"}
    said[("www2", "ready")] = "warning: cloud-init finished with module errors: locale"
    expected = []
    for host, step in dev.ran:
        text = said.get((host, step), "" if (host, step) == ("www2", "tcp") else f"done {step}")
        expected.append(row(host, step, "  0.5 s  ok" + (f"  {text}" if text else "")))
        if (host, step) == ("www2", "ready"):
            expected.append("  ! www2 ready: [www2/ready] warning: cloud-init finished with module errors: locale")
    assert out.getvalue().splitlines() == [*expected, f"full log: {lab.log_file(dev.topo)}"]
    kept = lab.log_file(dev.topo).read_text()
    assert all(f"stderr: {line}" in kept for line in DEBCONF + NOTICES)
    assert kept.count(" started\n") == len(dev.all)


def test_configure_with_a_callers_own_log_gets_every_line_as_before(dev):
    lines: list[str] = []
    lab.configure(dev.topo, dev.running, log=lines.append)
    assert row("lb1", "haproxy", "[lb1/haproxy] starting haproxy") in lines
    assert row("lb1", "haproxy", f"stderr: {NOTICES[0]}") in lines
    assert row("www2", "tcp", "ok") in lines  # a step that said nothing
    assert len(lines) == len(dev.all) + 1 + len(NOTICES) + len(DEBCONF)  # one line each, two for lb1's haproxy
    assert not lab.log_file(dev.topo).exists()


def test_a_failed_step_stops_configure_with_its_output(dev):
    dev.fails.add(("lb1", "haproxy"))
    out = io.StringIO()
    p = Progress(lab.log_file(dev.topo), out=out, tty=False, clock=clock())
    with pytest.raises(lab.LabError) as e:
        lab.configure(dev.topo, dev.running, log=p)
    assert dev.ran[-1] == ("lb1", "haproxy")  # nothing after it
    assert str(e.value) == f"lb1: step haproxy failed: its output is above, and in {lab.log_file(dev.topo)}"
    shown = out.getvalue().splitlines()
    assert shown[-3 - len(NOTICES) :] == [
        row("lb1", "haproxy", "  0.5 s  FAILED (exit 1)"),
        "    [lb1/haproxy] starting haproxy",
        "    [lb1/haproxy] haproxy running (4242)",
        *(f"    stderr: {n}" for n in NOTICES),
    ]
    # a caller's own log: the output in the error, as before, and no line for the failed step
    dev.ran.clear()
    lines: list[str] = []
    with pytest.raises(lab.LabError) as e:
        lab.configure(dev.topo, dev.running, log=lines.append)
    assert str(e.value).startswith("lb1: step haproxy failed:\n[lb1/haproxy] starting haproxy")
    assert NOTICES[-1] in str(e.value) and not any(" haproxy " in line for line in lines)


# -- the VM lab: what its Commands printed, from the state ---------------------------------------


def test_the_vm_labs_steps_output_goes_to_the_log_and_their_warnings_are_shown(tmp_path):
    state = State(tmp_path / "state.json")
    outputs = {
        "halab-www1-ready": ("[www1/ready] warning: cloud-init finished with module errors: locale\n", ""),
        "halab-lb1-haproxy": ("Get:1 http://deb.debian.org bookworm InRelease\n", "W: a warning from apt\n"),
        "halab-lb2-haproxy": ("[lb2/haproxy] W: not run this time\n", ""),
    }
    for name, (stdout, stderr) in outputs.items():
        urn = f"urn:pulumi:test::ha-lb-lab::{COMMAND}::{name}"
        state.entries[urn] = Entry(urn, COMMAND, name, {}, {"stdout": stdout, "stderr": stderr})
    actions = {"halab-www1-ready": "create", "halab-lb1-haproxy": "replace", "halab-lb2-haproxy": "same"}
    engine = SimpleNamespace(actions=lambda: actions)
    out = io.StringIO()
    p = Progress(tmp_path / "up.log", out=out, tty=False)
    vmlab._steps_output(engine, state, p)  # type: ignore[arg-type]
    p.close()
    assert out.getvalue().splitlines() == [
        "  ! halab-www1-ready: [www1/ready] warning: cloud-init finished with module errors: locale",
        "  ! halab-lb1-haproxy: stderr: W: a warning from apt",
        f"full log: {tmp_path / 'up.log'}",
    ]
    kept = (tmp_path / "up.log").read_text()
    assert "  halab-lb1-haproxy: Get:1 http://deb.debian.org bookworm InRelease" in kept
    assert "not run this time" not in kept  # only what ran this time
    lines: list[str] = []
    vmlab._steps_output(engine, state, lines.append)  # type: ignore[arg-type]
    assert lines == []  # a caller's own log gets the engine's lines only, as before


def test_the_log_files_live_in_the_state_that_down_removes():
    """Each lab's `down` removes its state directory, and its `leftovers` name that directory
    while it is there: the log inside goes with it, and is accounted for."""
    topo = topology.build(config.parse(stackfile.load_stack_file(str(STACKS["dev"]))))
    assert lab.log_file(topo) == lab.state_dir(topo) / "up.log"
    assert vmlab.log_file(str(STACKS["dev"])) == vmlab.state_dir(topo.lab.network.name) / "up.log"


# -- the command lines: `up` reports through a Progress, errors on stderr, the log named ----------


def cli(script: str, monkeypatch, *args: str):
    """The script's main(), as `scripts/<script> ARGS` runs it (same interpreter: no re-exec)."""
    import runpy

    monkeypatch.setattr("sys.argv", [script, *args])
    return runpy.run_path(str(ROOT / "scripts" / script), run_name="cli")["main"]


@pytest.mark.parametrize("script", ["netns-lab", "vm-lab"])
def test_up_on_the_command_line_reports_through_a_progress(script, monkeypatch, tmp_path, capsys):
    module = lab if script == "netns-lab" else vmlab
    monkeypatch.setattr(module, "STATE_ROOT", tmp_path / "labs")
    seen: list[object] = []

    def up(*args, log):
        seen.append(log)
        log("lab halab: creating 8 namespaces")
        log.started("lb1", "haproxy")
        log.finished("lb1", "haproxy", stdout="[lb1/haproxy] haproxy running (4242)\n", stderr=NOTICES[0])
        if "fail" in seen:
            raise module.LabError("lb1: step keepalived failed: its output is above")

    monkeypatch.setattr(module, "up", up)
    main = cli(script, monkeypatch, "up", "--config", str(STACKS["dev"]))
    assert main() == 0 and isinstance(seen[0], Progress)
    out = capsys.readouterr()
    log = tmp_path / "labs" / "halab" / "up.log"
    assert out.out.splitlines()[0] == "lab halab: creating 8 namespaces"
    assert re.fullmatch(r"  lb1        haproxy    +\d+\.\d s  ok  haproxy running \(4242\)", out.out.splitlines()[1])
    assert out.out.splitlines()[-1] == f"full log: {log}" and out.err == ""
    assert f"stderr: {NOTICES[0]}" in log.read_text() and NOTICES[0] not in out.out

    seen.append("fail")  # a failed up: its error on stderr, exit 1, the log still named
    assert cli(script, monkeypatch, "up", "--config", str(STACKS["dev"]))() == 1
    out = capsys.readouterr()
    assert out.err == f"{script}: lb1: step keepalived failed: its output is above\n"
    assert out.out.splitlines()[-1] == f"full log: {log}"
    assert f"{script}: lb1: step keepalived failed" in log.read_text()


def test_a_cli_up_that_fails_before_it_made_anything_leaves_no_log(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(lab, "STATE_ROOT", tmp_path / "labs")

    def up(*args, log):
        raise lab.LabError("this host cannot run the lab (nothing was changed):\n  - command haproxy")

    monkeypatch.setattr(lab, "up", up)
    assert cli("netns-lab", monkeypatch, "up", "--config", str(STACKS["dev"]))() == 1
    out = capsys.readouterr()
    assert out.out == "" and "nothing was changed" in out.err
    assert not (tmp_path / "labs").exists()
