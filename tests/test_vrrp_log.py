"""Reading the VRRP log that halab-notify keeps on each load balancer (halab/verify/vrrp.py),
from a stand-in transport that serves the file's text: what the labs' tests read a window's
state changes from. Fast tier, no lab."""

from __future__ import annotations

import subprocess

from conftest import ROOT

from halab.core import config, stackfile
from halab.verify import vrrp
from halab.verify.transport import VerifyContext


def line(host: str, state: str, at: str = "2026-12-07T01:11:32,174950360+00:00") -> str:
    return f"{at} {host} INSTANCE VI_100 {state} priority=140"


class LogTransport:
    """`cat` of each host's VRRP log: the lines in `logs`."""

    def __init__(self, logs: dict[str, list[str]]):
        self.logs = logs

    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        return subprocess.CompletedProcess(cmd, 0, "".join(f"{x}\n" for x in self.logs[host]), "")


def test_a_windows_states_are_the_lines_logged_after_its_start():
    lab = config.parse(stackfile.load_stack_file(str(ROOT / "Pulumi.dev.yaml")))
    logs = {"lb1": [line("lb1", "BACKUP"), line("lb1", "MASTER")], "lb2": [line("lb2", "BACKUP")]}
    t = LogTransport(logs)
    start = vrrp.state_changes(t, lab)
    assert start == {"lb1": 2, "lb2": 1}
    assert vrrp.states_since(t, lab, start) == {"lb1": [], "lb2": []}
    logs["lb2"] += [line("lb2", "FAULT"), "not a transition", line("lb2", "BACKUP")]
    assert vrrp.states_since(t, lab, start) == {"lb1": [], "lb2": ["FAULT", "BACKUP"]}
    logs["lb1"].append(line("lb1", "FAULT"))
    assert vrrp.states_since(t, lab, start)["lb1"] == ["FAULT"]


class FilterLab(LogTransport):
    """What the VRRP-filter row asks the load balancers and the rogue: filter counters that grow
    by 5 drops per load balancer while the rogue sends, keepalived's stats (the drill's `bash -s`:
    nothing bad), the VIP on lb1 (a probe that times out once the rogue has run, with
    `probe_lost`), and each node's VRRP log, to which the rogue's run appends `during`."""

    python = "python3"

    def __init__(self, logs: dict[str, list[str]], during: dict[str, list[str]], probe_lost: bool):
        super().__init__(logs)
        self.during, self.probe_lost, self.dropped = during, probe_lost, 0

    def run(self, host, cmd, *, input=None, check=True, timeout=60.0):
        out = ""
        if cmd[0] == "cat":
            return super().run(host, cmd)
        if cmd[:2] == ["ip", "-4"]:
            if self.probe_lost and self.dropped:  # the probes after the rogue's adverts
                raise subprocess.TimeoutExpired(cmd, timeout)
            out = " inet 192.168.69.110/32 scope global eth0\n" if host == "lb1" else ""
        elif cmd[0] == "iptables":
            out = f"{self.dropped} 0 DROP all -- * * 0.0.0.0/0 0.0.0.0/0\n"
        elif cmd[1] == "-":  # the rogue
            self.dropped += 5
            for name, lines in self.during.items():
                self.logs[name] += lines
            out = "sent 10 adverts"
        return subprocess.CompletedProcess(cmd, 0, out, "")


def test_the_filter_rows_master_stays_is_read_from_the_logs_not_one_probe():
    """The VRRP-filter row's "the master stays": no state logged in the window passes it, even
    when the holder probe at its end goes unanswered (a starved guest over SSH: a VM-lab verify
    failed the row so, lb1's log showing no change); a state logged in it fails it."""
    lab = config.parse(stackfile.load_stack_file(str(ROOT / "Pulumi.dev.yaml")))
    ctx = VerifyContext(lab, "client", ("198.51.100.10",), None, None, None, rogue="www2")

    def logs() -> dict[str, list[str]]:
        return {"lb1": [line("lb1", "MASTER")], "lb2": [line("lb2", "BACKUP")]}

    (row,) = vrrp.check_vrrp_filter(FilterLab(logs(), {}, probe_lost=True), ctx)
    assert row.ok, row
    assert "lb1: 5 dropped, 0 reached keepalived" in row.figure and "VIP on none" in row.figure, row
    moved = {"lb1": [line("lb1", "BACKUP")], "lb2": [line("lb2", "MASTER")]}
    (row,) = vrrp.check_vrrp_filter(FilterLab(logs(), moved, probe_lost=False), ctx)
    assert not row.ok and "'lb2': ['MASTER']" in row.figure, row
