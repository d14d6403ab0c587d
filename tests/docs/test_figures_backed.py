"""Every figure in README's Results section, and every figure docs attribute to a benchmark, comes from a results
JSON committed under bench/results/ that records its command, machine, date and load average.

The rule that finds and matches figures is in tests/docs/figures.py (module docstring). Figures known to be
unbacked today are listed below with who resolves them; the lists may only shrink: a listed figure that is now
backed or gone fails the test too, so the list is kept true.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.docs.figures import (
    ROOT,
    figures,
    load_results,
    provenance_problems,
    section,
    temporary_paths,
    unbacked,
)

README_SECTION = "## Results"

KNOWN_UNBACKED_README: set[str] = set()
"""Figure texts of README's Results section without a JSON behind them (the lead rewrites the section)."""

KNOWN_UNBACKED_DOCS: dict[str, set[str]] = {
    # h12 (docs/guide.md): CI substitutions written as figures
    'guide.md': {
        '2 req/s', '5 s', '60 s',
    },
    # h16 (docs/rollout.md): derived differences (+22 ms) not stored in the JSON
    'rollout.md': {
        '+22 ms',
    },
    # h13 (docs/runtimes.md): derived step (1/256)
    'runtimes.md': {
        '0.004',
    },
    # h18 (docs/scaling.md): figure not in tune.json as written
    'scaling.md': {
        '3.5 s',
    },
    # h15 (docs/transforms.md): the co-design ablation of 2026-11-27 (bench/codesign.py has been re-run since)
    'transforms.md': {
        '+0.001', '0.002', '0.773', '0.809', '0.883', '0.886', '0.893', '0.9590', '0.9604', '0.9611', '18.0',
        '18.1 %', '20 s', '22.1', '22.1 %', '40.8 %',
    },
}
"""Per docs file: figure texts in blocks citing a benchmark that its JSON does not hold (owner in the comment)."""


def _unbacked_by_file() -> dict[str, set[str]]:
    results = load_results()
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted((ROOT / "docs").glob("*.md")):
        for figure, _ in unbacked(path.read_text(), results, cited_only=True):
            found[path.name].add(figure.text)
    return found


# -- the rule itself ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value", "unit"), [
    ("cos 0.999", 0.999, None), ("speed-up 1.84×", 1.84, "×"), ("efficacy 26.4%", 26.4, "%"),
    ("latency 52.4 ms", 52.4, "ms"), ("takes 1 min 14 s", 74.0, "s"), ("5,000 req/s", 5000.0, "req/s"),
    ("1.00x", 1.0, "x"), ("drops by −0.03", -0.03, None), ("55 s in all", 55.0, "s"),
])
def test_a_figure_is_read_with_its_value_and_unit(text, value, unit):
    (figure,) = figures(text)
    assert figure.value == pytest.approx(value) and figure.unit == unit


@pytest.mark.parametrize("text", [
    "torch 2.13.0", "on 2026-11-27", "at 10:47 UTC", "batch 8×128", "2:4 sparsity", "cos ≥ 0.95", "NN < 0.9",
    "`--runs 20` and `per_token_max: 0.5`", "256 held-out texts in 9 models", "layer0.ffn", "p99 of icd_runA",
    "`python\nbench/x.py --limit 2.5` wraps", "```` ```bash ```` then `--budget 1.5`",
])
def test_set_up_values_versions_dates_bounds_and_code_are_not_figures(text):
    assert figures(text) == []


def test_a_figure_matches_at_the_precision_written():
    (pct,) = figures("26.4%")
    assert pct.matches(26.43) and pct.matches(0.2641) and not pct.matches(26.46)
    (ms,) = figures("52.4 ms")
    assert ms.matches(52.36) and ms.matches(0.05244) and not ms.matches(52.5)
    (wall,) = figures("1 min 14 s")
    assert wall.matches(73.6) and not wall.matches(75.0)
    (cos,) = figures("0.999")
    assert cos.matches(0.99905) and not cos.matches(0.9984)


def test_a_figure_without_a_json_fails_and_a_json_without_provenance_is_no_evidence():
    provenance = {"command": "python bench/x.py", "machine": {"cpu": "EPYC"}, "date": "2026-11-27T10:00:00+00:00",
                  "load_average": {"start": [1.0, 1.0, 1.0], "end": [1.2, 1.0, 1.0]}}
    text = "Bench (`bench/x.py`): 1.84× faster, p99 52.4 ms."
    backed = {"x.json": {**provenance, "speedup": 1.8391, "p99_ms": 52.41}}
    assert unbacked(text, backed) == []
    missing = unbacked(text, {"x.json": {**provenance, "speedup": 1.8391}})
    assert [f.text for f, _ in missing] == ["52.4 ms"]
    no_load = {key: value for key, value in backed["x.json"].items() if key != "load_average"}
    assert provenance_problems(no_load) == ["load_average"]
    assert len(unbacked(text, {"x.json": no_load})) == 2
    assert len(unbacked("Uncited: 1.84× faster.", backed)) == 1  # README: a figure must name its JSON
    assert len(unbacked("Bench (`bench/y.py`): 1.84× faster.", backed, cited_only=True)) == 1  # y.json not committed


KNOWN_INCOMPLETE_RESULTS: dict[str, str] = {}
"""Results JSONs written before provenance was recorded; their figures are not evidence until re-run."""


def _results_params():
    for name in sorted(load_results()):
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_INCOMPLETE_RESULTS[name])] \
            if name in KNOWN_INCOMPLETE_RESULTS else []
        yield pytest.param(name, id=name, marks=marks)


# -- the repository ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _results_params())
def test_every_results_json_records_command_machine_date_and_load(name):
    assert provenance_problems(json.loads((ROOT / "bench" / "results" / name).read_text())) == []


def test_readme_results_figures_come_from_committed_results():
    text = section((ROOT / "README.md").read_text(), README_SECTION)
    missing = {figure.text for figure, _ in unbacked(text, load_results())}
    assert missing - KNOWN_UNBACKED_README == set(), "README figures with no results JSON behind them"
    assert KNOWN_UNBACKED_README - missing == set(), "now backed or gone: remove from KNOWN_UNBACKED_README"


def test_docs_figures_attributed_to_a_benchmark_come_from_its_results():
    found = _unbacked_by_file()
    new = {name: texts - KNOWN_UNBACKED_DOCS.get(name, set()) for name, texts in found.items()}
    assert {name: texts for name, texts in new.items() if texts} == {}, "docs figures not in their results JSON"
    stale = {name: texts - found.get(name, set()) for name, texts in KNOWN_UNBACKED_DOCS.items()}
    assert {name: texts for name, texts in stale.items() if texts} == {}, "remove from KNOWN_UNBACKED_DOCS"


def test_a_temporary_folder_counts_outside_code_only():
    assert temporary_paths("run `icd decrypt --output\n/tmp/p.json` to read it") == []
    assert temporary_paths("measured on the lead's run (/tmp/icd_runA)") == ["measured on the lead's run (/tmp/icd_runA)"]


def test_no_committed_evidence_cites_a_temporary_folder():
    cited = {path.name: temporary_paths(path.read_text())
             for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    assert {name: lines for name, lines in cited.items() if lines} == {}
