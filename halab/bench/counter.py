"""The benchmark's mock monitor: it counts the program's registrations without decoding them."""

from __future__ import annotations

from pulumi.runtime import mocks as pmocks

from halab.drivers.program_runtime import Recorder


class Counter(Recorder):
    """Counts registrations without decoding them: the benchmark's monitor. Under `pulumi up`
    the engine decodes what the program sends, in its own process; Recorder's decoding of
    every input is the tests' cost, not the program's."""

    def __init__(self, m):
        super().__init__(m)
        self.count = 0

    def RegisterResource(self, request):
        resp = pmocks.MockMonitor.RegisterResource(self, request)
        self.count += request.type != "pulumi:pulumi:Stack"
        return resp
