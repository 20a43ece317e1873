"""The README is one screen, and the pages of docs/ hold the rest (issue #26). What keeps it so:
the README's length; every page reachable from it and every link and anchor alive, since a
moved section silently breaks the links to it; the README's two command lines being the very
ones CI and the fresh-root test run, since a reader copies them; and no figure that changes from
run to run outside docs/benchmarks.md, which scripts/bench rewrites: a figure quoted anywhere
else goes stale at the next run (the old README's had, its ceilings and row counts included).

Fast: files only, no root, no lab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, STACKS

README = ROOT / "README.md"
DOCS = ROOT / "docs"
GENERATED = DOCS / "benchmarks.md"  # written by scripts/bench (halab/bench/report.py): its figures are one run's
MAX_README_LINES = 200  # one screen, scrolled once (issue #26)

# The README's two commands: stand the namespace lab up; run the whole suite as CI does.
NETNS_LINE = "scripts/setup --lab && scripts/netns-lab up --config Pulumi.dev.yaml"
TEST_LINE = "scripts/setup --tests && scripts/test"

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
SHELL_FENCE = re.compile(r"^```sh[ \t]*$.*?^```[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)

# Figures that change from run to run, as the old README quoted them. Each pattern is narrow
# enough that settings (a 1 s advert, a 25 s bound, a 5-minute soak) and derived bounds do not
# match; a ceiling is written "≤ X s" and pinned to the code by its own test below, and 0.05 s
# and 0.025 s are the fast stack's advert interval and watcher period, settings.
RUN_FIGURES: dict[str, str] = {
    "a count of tests, rows or packages": r"\b\d+ (?:passed|tests|rows|packages)\b",
    "a rate": r"\d[\d,.]*\s*(?:(?:new )?(?:requests|connections))?/s\b"
    r"|\d[\d,.]* (?:new )?(?:requests|connections) a second",
    "seconds to the first success": r"\d+(?:\.\d+)? s to the first success",
    "a measured time, 'in X s'": r"\bin ~?\d+(?:\.\d+)? s\b",
    "a measured time, 'after X.Y s'": r"\bafter \d+\.\d+ s\b",
    "a range of measured seconds": r"\b\d+[-–]\d+ s\b|\b\d+\.\d{2}[-–]\d+\.\d{2}(?= s\b| over)",
    "a run's duration": r"(?<![\w.])\d{3,} s\b|\(\d+ s here\)|~ ?\d+(?:\.\d+)? s\b",
    "a measured time, in context": r"\b\d+\.\d+ s (?:with \d|and \d+ failed|on (?:a guest|lab3))",
    "seconds to the hundredth": r"(?<![\w.])(?<!≤ )(?!0\.05 s|0\.025 s)\d+\.\d{2,} s\b",
    "a count of requests": r"\bof ~?[\d,]+ requests\b|\brequests? (?:of|in) ~?[\d,]{3,}\b",
    "failed requests": r"\b[1-9]\d* failed\b",
    "state changes": r"\b\d+ (?:VRRP )?(?:state )?changes\b",
    "a ratio or a share": r"\b\d+(?:\.\d+)? times\b|\b\d+(?:\.\d+)?%",
    "CPU or memory": r"\b\d+\.\d+ ms\b|\b\d+ MiB\b",
}
# What a test costs may be said in docs/testing.md only, as an approximation ("about 20 minutes").
COSTS = r"\b\d+(?:\.\d+)? (?:minutes?|min)\b|\b(?:[Aa]bout|[Uu]nder) \d+(?:\.\d+)? s\b"
APPROXIMATE_COSTS = r"(?<![Aa]bout )(?<![Uu]nder )\b\d+(?:\.\d+)? (?:minutes?|min)\b"


def pages() -> list[Path]:
    """The README and every page of docs/, the generated one included."""
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text without its fenced blocks and inline code, where a link is an example, not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation (backticks included) dropped,
    spaces as hyphens. Links are written against GitHub's rendering, so they are checked so."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page, a repeated heading's with GitHub's -1, -2 suffix."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, title in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = github_slug(title)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def relative_links(page: Path) -> list[str]:
    """The page's links that point into the repository (no scheme, no mail)."""
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def resolve(page: Path, target: str) -> tuple[Path, str]:
    """A link's file (the page itself for a bare #anchor) and its anchor ('' for none)."""
    path, _, anchor = target.partition("#")
    return ((page.parent / path).resolve() if path else page), anchor


def fenced_lines(text: str) -> list[str]:
    """The lines of a page's shell blocks, each without its comment: what a reader copies."""
    return [line.split("#", 1)[0].strip() for block in SHELL_FENCE.findall(text) for line in block.splitlines()[1:-1]]


def run_figures(text: str, *, costs_allowed: bool) -> list[tuple[str, str]]:
    """Every (kind, text) of a figure that changes from run to run; `costs_allowed`: the page
    that may say what a test costs, approximately."""
    text = " ".join(text.split())  # a figure and its unit may sit on two lines
    found = [(kind, m.group(0)) for kind, rx in RUN_FIGURES.items() for m in re.finditer(rx, text)]
    costs = APPROXIMATE_COSTS if costs_allowed else COSTS
    return found + [("a cost", m.group(0)) for m in re.finditer(costs, text)]


def test_the_readme_is_one_screen() -> None:
    """What it is, the picture, the two commands, what you get, where to read on: more than a
    screen and it becomes a manual again, which is what docs/ is for."""
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md: {len(lines)} lines; the rest belongs in docs/"


def test_every_docs_page_is_linked_from_the_readme_and_every_file_from_some_page() -> None:
    """A page nobody links to is never read; an image no page shows is left behind by a move."""
    linked = {resolve(README, t)[0] for t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README's 'Read on' does not link: {unlinked}"
    shown = {resolve(p, t)[0] for p in pages() for t in relative_links(p)}
    orphans = [p.name for p in sorted(DOCS.iterdir()) if p.suffix != ".md" and p.resolve() not in shown]
    assert not orphans, f"files in docs/ that no page links or shows: {orphans}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    """A section moved to another page leaves its old links pointing at nothing, and GitHub shows
    a dead anchor as a link that goes nowhere, silently: each link's file and heading must exist."""
    broken: list[str] = []
    for target in relative_links(page):
        path, anchor = resolve(page, target)
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, broken


def test_the_readmes_test_line_is_what_ci_runs() -> None:
    """CI proves the line a reader copies: the same characters, run as a command of .ci/run."""
    readme = README.read_text()
    assert TEST_LINE in fenced_lines(readme), f"README: no fenced line {TEST_LINE!r}"
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert TEST_LINE in ci, f".ci/run does not run {TEST_LINE!r}"


def test_the_readmes_first_line_is_what_the_fresh_root_test_runs() -> None:
    """tests/test_fresh_machine.py takes the line from the README (readme_line) and runs it in
    scripts/fresh-root: that extraction must still find exactly this line, fenced, first."""
    from test_fresh_machine import readme_line

    assert readme_line("scripts/setup --lab") == NETNS_LINE
    assert readme_line("scripts/setup --tests") == TEST_LINE
    commands = [line for line in fenced_lines(README.read_text()) if line]
    assert commands[0] == NETNS_LINE, f"the README's first command is {commands[0]!r}"
    assert NETNS_LINE in (ROOT / "tests/test_fresh_machine.py").read_text()


@pytest.mark.parametrize("page", [p for p in pages() if p != GENERATED], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_but_the_generated_one_quotes_a_figure_of_a_run(page: Path) -> None:
    """Figures of a run live in docs/benchmarks.md, rewritten by each run; elsewhere, words or a
    link to it. docs/testing.md may say what a big test costs, approximately."""
    found = run_figures(page.read_text(), costs_allowed=page.name == "testing.md")
    assert not found, f"{page.relative_to(ROOT)}: a run's figures (say it in words, or link benchmarks.md): {found}"


def test_the_figure_check_catches_what_the_old_readme_quoted() -> None:
    """The check is only worth its patterns: on excerpts of the README as it was before issue #26
    (its words, some lines cut short), each kind of figure is found; settings, bounds and
    approximate costs are not."""
    old = """\
architecture, files and scripts as the VMs, in network namespaces on this host, in ~15 s:
failover, haproxy killed on lb1      PASS    0.50 s to the first success, 2 failed; VIP on lb2; ...
25 passed, 0 failed, 0 skipped
2-core machine (30 rows; `tests/stacks/Pulumi.lab3.yaml` gives 51, `tests/stacks/Pulumi.pools.yaml` 47):
| haproxy reloads under load (www2 removed, then back) | 4 reloads, 0 failed of 1162 requests |
| www1 started: back in rotation | UP on every load balancer after 3.1 s |
| every VRRP state change is logged, timestamped, on each LB | lb1: 13 changes (now MASTER), lb2: 9 changes |
| `up`, nothing there yet | 269-301 s: libvirtd started, network and volumes in 2 s, the domains 45 s |
| defaults | 0.50 s | 1.53 s | 3.12 s |
**From the committed run** (475 s), medians for haproxy killed / hung / link cut, time until
- **Stability.** The fast stack's soak logged 0 VRRP state changes, idle and under load (2,717
  requests/s through its VIP).
- **The data plane.** Through the VIP, new connections run at 0.53 times the rate of direct
  0.177 ms direct; the load balancers take 0.129 ms of it. So the CPU allows a ratio of 0.50,
  through the VIP) put haproxy's own code at 3.7% of the host's CPU. The work in haproxy's
  20. `verify --read-only` takes about 6 s at any size. A load balancer holds 29 MiB and a
  tracked file not yet written. setup names the 11 packages it installs, the
  `down` after an `up` killed halfway (nothing left). About 15 minutes on this 2-core host
| `reboot` of the master and a backend | 122 s: SSH after 54-64 s, everything back 2-14 s later |
`ExecStopPost` and taken by lb2); link cut, 4.8 s and 4 failed; each restore, lb1 takes the VIP
"""
    kinds = {kind for kind, _ in run_figures(old, costs_allowed=False)}
    missed = {*RUN_FIGURES, "a cost"} - kinds
    assert not missed, missed
    fine = "adverts every 0.05 s, a watcher every 0.025 s; its ceiling ≤ 0.75 s; back after 25 s at the latest"
    assert run_figures(fine, costs_allowed=False) == []
    assert run_figures("about 20 minutes under TCG, plus about 13", costs_allowed=True) == []
    assert run_figures("the suite takes 20 minutes", costs_allowed=True)


def test_the_ceilings_in_docs_verify_are_the_codes() -> None:
    """docs/verify.md quotes each failover row's ceiling for the dev and lab3 stacks: settings
    derived from the timers, not a run's figures, but they drift when the code's slack or
    sampling changes (the old README's had); halab/verify/failover.py is the source."""
    from halab.core import config, stackfile
    from halab.verify.failover import detection_ceilings
    from halab.verify.transport import VerifyContext

    def ceilings(stack: str) -> dict[str, float]:
        lab = config.parse(stackfile.load_stack_file(str(STACKS[stack])))
        ctx = VerifyContext(
            lab=lab, client="", client_sources=(), outside_source=None, lan_client=None, lan_source=None, rogue=""
        )
        return detection_ceilings(ctx)  # the namespace lab's timing: VerifyContext's defaults

    dev, lab3 = ceilings("dev"), ceilings("lab3")
    text = (DOCS / "verify.md").read_text()
    rows = re.findall(r"^\| ([a-z ]+) \| [^|]+ \| ≤ (\d+\.\d+) s \| ≤ (\d+\.\d+) s \|$", text, re.M)
    assert {fault for fault, *_ in rows} == set(dev), rows
    for fault, quoted_dev, quoted_lab3 in rows:
        assert float(quoted_dev) == round(dev[fault], 2), (fault, quoted_dev, dev[fault])
        assert float(quoted_lab3) == round(lab3[fault], 2), (fault, quoted_lab3, lab3[fault])


def test_the_router_config_in_docs_ecmp_is_the_templates() -> None:
    """docs/ecmp.md shows the upstream router's FRR config for the ecmp test stack; a copy that
    drifted from frr-router.conf.j2 would mislead whoever types it into their router."""
    from halab.core import config, render, stackfile
    from halab.core.model import Credentials

    text = (DOCS / "ecmp.md").read_text()
    m = re.search(r"<!-- frr-router: (\S+) -->\n```\n(.*?)\n```", text, re.S)
    assert m, "docs/ecmp.md lost its router config block"
    lab = config.parse(stackfile.load_stack_file(str(ROOT / m.group(1))))
    assert m.group(2) + "\n" == render.frr_router_conf(lab, Credentials.placeholder())
