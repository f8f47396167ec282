"""Every stated figure against its raw result: bench/claims.toml (README.md, BENCHMARKS.md) and the registry
shipped with the package, deeptut/claims.toml (`deeptut presets`). Each claim names its text in a section of
a document, and for each number in it the raw file under bench/results/ and the field (JSON path) or regex
that gives it; the number must be the raw value rounded as printed. In the sections bench/claims.toml's
[[scope]] lists, every figure with a unit (%, s, ms, nats, x) must lie inside a registered claim's text or
an [[exempt]] text (published figures, targets, settings), so a figure added without evidence fails here."""

from __future__ import annotations

import re
import tomllib

import pytest

from claims_helpers import FIGURE, ROOT, ClaimError, check_figure, numbers, rounds_to
from deeptut import presets

BENCH = tomllib.loads((ROOT / "bench" / "claims.toml").read_text())
SHIPPED = presets.measured()


def section(doc: str, heading: str) -> str:
    """The text of `doc` from the line `heading` to the next heading of the same or a higher level."""
    lines = (ROOT / doc).read_text().splitlines()
    try:
        i = lines.index(heading)
    except ValueError:
        raise AssertionError(f"{doc}: no heading line {heading!r}") from None
    level = len(heading) - len(heading.lstrip("#"))
    out = []
    for line in lines[i + 1:]:
        m = re.match(r"(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


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


@pytest.mark.parametrize("scope", BENCH["scope"], ids=[f"{s['doc']}:{s['section']}" for s in BENCH["scope"]])
def test_every_figure_in_a_covered_section_is_registered(scope):
    text = section(scope["doc"], scope["section"])
    if scope.get("lines", "table") == "table":
        text = "\n".join(ln for ln in text.splitlines() if ln.startswith("|"))
    covered = [c["text"] for c in BENCH["claim"] if c["doc"] == scope["doc"] and c["section"] == scope["section"]]
    covered += [e["text"] for e in BENCH.get("exempt", []) if e["doc"] == scope["doc"]
                and e["section"] == scope["section"]]
    missing = _unregistered(text, covered)
    assert not missing, f"{scope['doc']} {scope['section']}: figures with no entry in bench/claims.toml: {missing}"


def test_exempt_texts_exist_and_say_why():
    for e in BENCH.get("exempt", []):
        assert e["text"] in section(e["doc"], e["section"]), e["text"]
        assert e.get("why"), e["text"]


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
