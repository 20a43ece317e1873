"""Reading the VRRP log that halab-notify keeps on each load balancer (halab/verify/vrrp.py),
from a stand-in transport that serves the file's text: what the labs' tests read a window's
state changes from. Fast tier, no lab."""

from __future__ import annotations

import subprocess

from conftest import ROOT

from halab.core import config, stackfile
from halab.verify import vrrp


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
