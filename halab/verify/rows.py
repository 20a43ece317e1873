"""A verify row: one claim, its result and the figure that backs it; and the table they print as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    check: str
    ok: bool
    figure: str
    skipped: bool = False  # nothing to prove with this config: neither a pass nor a failure

    @property
    def result(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"


def skip(check: str, why: str) -> Row:
    return Row(check, True, why, skipped=True)


def table(rows: list[Row]) -> str:
    w = max(len(r.check) for r in rows)
    lines = [f"{'check':<{w}}  result  figure", f"{'-' * w}  ------  ------"]
    lines += [f"{r.check:<{w}}  {r.result:<6}  {r.figure}" for r in rows]
    return "\n".join(lines)
