"""Every stated figure against its raw result: bench/claims.toml (README.md, BENCHMARKS.md) and the registry
shipped with the package, deeptut/claims.toml (`deeptut presets`). Each claim names its text in a section of
a document, and for each number in it the raw file under bench/results/ and the field (JSON path) or regex
that gives it; the number must be the raw value rounded as printed. In what bench/claims.toml's [[scope]]
entries cover (README.md and BENCHMARKS.md whole, and the result tables' cells), every figure with a unit
(%, s, ms, us, nats, min, hours, MB, bytes, x...), and every number of a result table, must lie inside a registered claim's text,
an [[exempt]] entry (published figures, targets, settings) or a [[pending]] section (listed, not yet
registered), so a figure added without evidence fails here."""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

import pytest

from claims_helpers import FIGURE, NUMBER, ROOT, ClaimError, check_figure, numbers, rounds_to
from deeptut import presets

BENCH = tomllib.loads((ROOT / "bench" / "claims.toml").read_text())
SHIPPED = presets.measured()


@functools.cache
def doc_text(doc: str, root: Path = ROOT) -> str:
    return (root / doc).read_text()


@functools.cache
def headings(doc: str, root: Path = ROOT) -> tuple[tuple[int, int, str], ...]:
    """(line index, level, line) of each heading of `doc`, outside fenced code blocks."""
    out, fenced = [], False
    for i, line in enumerate(doc_text(doc, root).splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#+) ", line)):
            out.append((i, len(m.group(1)), line))
    return tuple(out)


@functools.cache
def section_lines(doc: str, heading: str, root: Path = ROOT) -> tuple[int, int]:
    """The line range [first, end) of `doc`'s section `heading`: its heading line to the next heading of the
    same or a higher level; "*" is the whole document."""
    n = len(doc_text(doc, root).splitlines())
    if heading == "*":
        return 0, n
    heads = headings(doc, root)
    found = [(k, lvl) for k, (_, lvl, line) in enumerate(heads) if line == heading]
    if not found:
        raise AssertionError(f"{doc}: no heading line {heading!r}")
    k, level = found[0]
    end = next((i for i, lvl, _ in heads[k + 1:] if lvl <= level), n)
    return heads[k][0], end


def section(doc: str, heading: str) -> str:
    """The text of `doc`'s section `heading` (its heading line included)."""
    a, b = section_lines(doc, heading)
    return "\n".join(doc_text(doc).splitlines()[a:b])


def spec_of(fig: dict) -> dict:
    """A figure's evidence; `preset = "NAME.FIGURE"` borrows a shipped registry figure's."""
    if "preset" in fig:
        name, _, key = fig["preset"].partition(".")
        return SHIPPED[name]["figures"][key]
    return fig


def claim_ids():
    return [f"{c['doc']}:{c['text'][:40]}" for c in BENCH["claim"]]


@pytest.mark.parametrize("claim", BENCH["claim"], ids=claim_ids())
def test_registered_claim_is_in_its_section_and_matches_its_raw_result(claim):
    text = section(claim["doc"], claim["section"])
    assert claim["text"] in text, f"{claim['doc']} {claim['section']}: the claimed text is not there: {claim['text']!r}"
    nums = numbers(claim["text"])
    assert claim["figures"], claim["text"]
    for fig in claim["figures"]:
        assert fig.get("n", 0) < len(nums), f"{claim['text']!r} has {len(nums)} numbers, no number {fig.get('n', 0)}"
        printed = nums[fig.get("n", 0)]
        check_figure(printed, spec_of(fig))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_registry_figures_match_their_raw_results(name):
    entry = SHIPPED[name]
    for key, fig in entry.get("figures", {}).items():
        try:
            check_figure(fig["value"], fig)
        except ClaimError as e:
            raise AssertionError(f"deeptut/claims.toml [{name}] {key} = {fig['value']}: {e}") from None
        assert "{" + key + "}" in entry["result"], (name, key)


def _unregistered(text: str, covered: list[str]) -> list[str]:
    """The figures with a unit in `text` that no `covered` text (found in `text`) encloses."""
    spans = []
    for c in covered:
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(c), text)]
    return [m.group(0) for m in FIGURE.finditer(text)
            if not any(a <= m.start() and m.end() <= b for a, b in spans)]


def test_preset_results_state_no_figure_outside_the_registry():
    """A `deeptut presets` result line states figures only through its registry names, or in a clause (up
    to a ';') that calls them published."""
    for name, entry in SHIPPED.items():
        line = entry["result"]
        for clause in re.split(r";", re.sub(r"\{\w+\}", "#", line)):
            if "published" in clause:
                continue
            assert not FIGURE.findall(clause), f"deeptut/claims.toml [{name}]: literal figure in {clause!r}"
    for name in presets.ABOUT:
        assert presets.about(name)[2] == presets.result(name)


def _spans(doc: str, text: str, entries: list[dict], root: Path = ROOT) -> list[tuple[int, int]]:
    """The character spans of `text` (the whole of `doc`) that `entries` cover: each entry's `text` where it
    occurs inside its section, or each match of its `pattern` (a regex) inside its section ("*" or none: the
    whole document)."""
    starts = [0]
    for line in text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    out = []
    for e in entries:
        if e["doc"] != doc:
            continue
        a, b = section_lines(doc, e.get("section", "*"), root)
        lo, hi = starts[a], starts[b] - 1
        if "pattern" in e:
            out += [(m.start() + lo, m.end() + lo) for m in re.finditer(e["pattern"], text[lo:hi])]
        elif "text" in e:
            out += [(m.start() + lo, m.end() + lo) for m in re.finditer(re.escape(e["text"]), text[lo:hi])]
        else:  # a whole section
            out.append((lo, hi))
    return out


def unregistered_figures(scope: dict, bench: dict = BENCH, root: Path = ROOT) -> list[str]:
    """The figures in `scope` (a [[scope]] table) that no claim, exemption or pending entry covers, as "LINE:
    FIGURE (in HEADING)": with a unit (claims_helpers.FIGURE: %, s, ms, nats, MB, x...) in its lines ("all") or table rows
    ("table"); every number of a table's body cells after the first ("cells": a table of results)."""
    doc = scope["doc"]
    text = doc_text(doc, root)
    lines = text.split("\n")
    a, b = section_lines(doc, scope["section"], root)
    covered = _spans(doc, text, bench.get("claim", []) + bench.get("exempt", []) + bench.get("pending", []), root)
    heads = headings(doc, root)
    mode = scope.get("lines", "table")
    missing, offset = [], sum(len(ln) + 1 for ln in lines[:a])
    for i in range(a, b):
        line = lines[i]
        if mode == "cells":  # every number in a table's body cells after the first (a result table)
            body = line.startswith("|") and not re.match(r"\|[\s|:-]*$", line) and i > 0 and lines[i - 1].startswith("|")
            found = NUMBER.finditer(line, line.index("|", 1)) if body else ()
        else:
            found = FIGURE.finditer(line) if mode == "all" or line.startswith("|") else ()
        for m in found:
            s, e = offset + m.start(), offset + m.end()
            if not any(x <= s and e <= y for x, y in covered):
                head = next((h for j, _, h in reversed(heads) if j <= i), "(top)")
                missing.append(f"{i + 1}: {m.group(0)!r} (in {head[:70]})")
        offset += len(line) + 1
    return missing


@pytest.mark.parametrize("scope", BENCH["scope"], ids=[f"{s['doc']}:{s['section'][:50]}" for s in BENCH["scope"]])
def test_every_figure_in_a_covered_section_is_registered(scope):
    missing = unregistered_figures(scope)
    assert not missing, (f"{scope['doc']} {scope['section']}: {len(missing)} figures with no entry in "
                         f"bench/claims.toml:\n" + "\n".join(missing))


def test_exempt_and_pending_entries_exist_and_say_why():
    for e in BENCH.get("exempt", []) + BENCH.get("pending", []):
        where = f"{e['doc']} {e.get('section', '*')}"
        body = section(e["doc"], e.get("section", "*"))
        if "pattern" in e:
            assert re.search(e["pattern"], body), f"{where}: the pattern {e['pattern']!r} matches nothing"
        elif "text" in e:
            assert e["text"] in body, f"{where}: the exempt text is not there: {e['text']!r}"
        assert e.get("why"), f"{where}: an entry needs its `why`"


# --- the checker itself can fail ----------------------------------------------------------------------------

def test_checker_refuses_a_drifted_figure_a_missing_file_and_a_wrong_path(tmp_path):
    (tmp_path / "r.json").write_text('{"runs": [{"t": 8.91}, {"t": 8.87}], "x": 1.2345}')
    (tmp_path / "r.log").write_text("WALL 233.42 s\nWALL 253.20 s\n")
    ok = {"file": "r.json", "json": ["runs", "*", "t"], "agg": "mean"}
    assert check_figure("8.89", ok, tmp_path) == pytest.approx(8.89)
    with pytest.raises(ClaimError, match="raw result gives"):
        check_figure("8.90", ok, tmp_path)  # one unit of the last digit off
    with pytest.raises(ClaimError, match="where one was expected"):
        check_figure("8.91", {"file": "r.json", "json": ["runs", "*", "t"]}, tmp_path)
    with pytest.raises(ClaimError, match="do not print so"):
        check_figure("8.91", {**ok, "agg": "all"}, tmp_path)
    with pytest.raises(ClaimError, match="not found"):
        check_figure("1", {"file": "nope.json", "json": ["x"]}, tmp_path)
    with pytest.raises(ClaimError, match="no 'y'"):
        check_figure("1.23", {"file": "r.json", "json": ["y"]}, tmp_path)
    assert check_figure("1.23", {"file": "r.json", "json": ["x"]}, tmp_path) == 1.2345
    assert check_figure("253", {"file": "r.log", "regex": r"WALL ([0-9.]+) s", "agg": "max"}, tmp_path) == 253.2
    with pytest.raises(ClaimError, match="matches nothing"):
        check_figure("1", {"file": "r.log", "regex": r"USER ([0-9.]+)"}, tmp_path)
    assert not rounds_to(0.9449, "0.95") and rounds_to(0.9451, "0.95") and rounds_to(1034.75, "1,035")
    assert rounds_to(1.14e-08, "1.1e-08") and not rounds_to(1.16e-08, "1.1e-08") and not rounds_to(1.1, "1.1e-08")


def test_scan_finds_units_ranges_and_ratios():
    text = "| a | 1.68 % / 1.65 % in 877 s | 23-29 s a run | 6.0x and x5.11 | -94.09 nats | 3 x 1000 | lr 0.1 |"
    assert _unregistered(text, []) == ["1.68 %", "1.65 %", "877 s", "23-29 s", "6.0x", "x5.11", "-94.09 nats"]
    assert _unregistered(text, ["1.68 % / 1.65 % in 877 s", "-94.09 nats"]) == ["23-29 s", "6.0x", "x5.11"]
    assert _unregistered("took 2 minutes (3 hours) for 12 MB, 3 x 1000, H200, 64 MiB", []) == [
        "2 minutes", "3 hours", "12 MB", "64 MiB"]


def test_scan_covers_claims_exemptions_pending_sections_and_result_cells(tmp_path):
    (tmp_path / "D.md").write_text("# D\n\n## A\nran 1.5 s, x2.0; batch 20 at 30 % noise\n```\n# not a heading\n```\n"
                                  "| run | s | err |\n|---|---|---|\n| a 1 | 3.2 | 0.91 |\n\n## B\ntook 9 s\n")
    scope = {"doc": "D.md", "section": "*", "lines": "all"}
    assert unregistered_figures(scope, {}, tmp_path) == ["4: '1.5 s' (in ## A)", "4: 'x2.0' (in ## A)",
                                                         "4: '30 %' (in ## A)", "13: '9 s' (in ## B)"]
    bench = {"claim": [{"doc": "D.md", "section": "## A", "text": "ran 1.5 s, x2.0"}],
             "exempt": [{"doc": "D.md", "pattern": r"\d+ % noise"}], "pending": [{"doc": "D.md", "section": "## B"}]}
    assert unregistered_figures(scope, bench, tmp_path) == []
    bench["claim"][0]["section"] = "## B"  # a claim covers its text only inside its own section
    assert unregistered_figures(scope, bench, tmp_path) == ["4: '1.5 s' (in ## A)", "4: 'x2.0' (in ## A)"]
    cells = {"doc": "D.md", "section": "## A", "lines": "cells"}  # the numbers of a result table's body cells
    assert unregistered_figures(cells, {}, tmp_path) == ["10: '3.2' (in ## A)", "10: '0.91' (in ## A)"]
    assert unregistered_figures(cells, {"claim": [{"doc": "D.md", "section": "## A", "text": "| 3.2 | 0.91 |"}]},
                                tmp_path) == []


def test_evidence_arithmetic_differences_ratios_medians_and_clock_parts(tmp_path):
    (tmp_path / "a.json").write_text('{"fast": [11.2, 12.5], "slow": [15.1, 16.9], "t": 820.72}')
    fast, slow = {"file": "a.json", "json": ["fast", "*"]}, {"file": "a.json", "json": ["slow", "*"]}
    assert check_figure("4.2", {**slow, "minus": fast, "agg": "mean"}, tmp_path) == pytest.approx(4.15)
    with pytest.raises(ClaimError, match="raw result gives"):
        check_figure("4.3", {**slow, "minus": fast, "agg": "mean"}, tmp_path)
    assert check_figure("1.35", {**slow, "over": fast, "agg": "max"}, tmp_path) == pytest.approx(16.9 / 12.5)
    with pytest.raises(ClaimError, match="needs as many"):
        check_figure("1", {**slow, "over": {"file": "a.json", "json": ["t"]}}, tmp_path)
    assert check_figure("3.9", {**slow, "offset": -11.2, "agg": "min"}, tmp_path) == pytest.approx(3.9)
    assert check_figure("11.85", {**fast, "agg": "median"}, tmp_path) == pytest.approx(11.85)
    t = {"file": "a.json", "json": ["t"]}
    assert check_figure("13", {**t, "clock_part": "min"}, tmp_path) == 13
    assert check_figure("41", {**t, "clock_part": "s"}, tmp_path) == 41
    with pytest.raises(ClaimError):
        check_figure("40", {**t, "clock_part": "s"}, tmp_path)  # 820.72 s is 13 min 41 s, not 40
    assert numbers("0.46 ms, x5.11 | r1 2x5 H200") == ["0.46", "5.11", "2"]
