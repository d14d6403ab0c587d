"""Find the figures a Markdown text states, and the results JSONs that back them (tests/docs/test_figures_backed.py).

The rule (what counts as a figure, how it is matched) — keep README and docs written so that it holds:

1. Text inside inline code (`...`) and fenced code blocks is not read: commands and options are not figures.
2. A **figure** is a number written with a decimal point (``0.999``, ``52.4``), or any number followed by a unit
   of measure: ``%``, ``×`` / ``x`` (speed-ups, ratios), ``ms``, ``µs``, ``s``, ``min``, ``req/s``, ``texts/s``,
   ``bytes``, ``MB`` — e.g. ``26.4%``, ``1.84×``, ``52.4 ms``, ``5,000 req/s``, ``1 min 14 s`` (one figure,
   74 s). Thousands are separated by commas (``57,932``); a leading ``+`` / ``−`` sign is part of the figure.
3. Not figures: version numbers (``2.13.0``), dates (``2026-11-27``), clock times (``10:47``), shapes and
   patterns (``8×128``, ``2:4``), bounds and targets (a number right after ``≥ ≤ < >``), and plain integers
   without a unit (counts such as "256 texts", "9 models": they are set-up, recorded in the JSON's command or
   options).
4. A figure is **backed** when a number in a results JSON rounds to it at the precision written: ``|x − v| ≤
   ½·10^-d`` (``d`` = decimals shown). ``%`` also matches a fraction (``0.2641`` for ``26.4%``), ``ms`` a value in
   seconds, ``s`` / ``min`` a value in seconds. Numbers inside JSON strings count too.
5. Which JSONs: those a block cites — paragraph, list item or table, also through its heading (up to the next
   heading) and, for a table, the paragraph just before it — as ``bench/results/<name>.json``, or as
   ``bench/<name>.py`` meaning ``bench/results/<name>.json`` and ``<name>_*.json``. A figure in a block of
   README's Results section that cites none is unbacked; in docs, the blocks that cite a benchmark are checked.
   Only JSONs that record command, machine, date and load average (:func:`provenance_problems`) are evidence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"(?P<ticks>`+)(?:[^\n]|\n(?!\s*\n))*?(?P=ticks)")  # inline code (any backtick run), may wrap
_NOT_FIGURES = [
    re.compile(r"\d+\.\d+\.\d+[\w.+-]*"),              # versions
    re.compile(r"\d{4}-\d\d-\d\d(?:[T ][\d:+.Z]*)?"),  # dates
    re.compile(r"\d{1,2}:\d\d(?::\d\d)?"),             # clock times, N:M patterns
    re.compile(r"\d+(?:\s*[×x]\s*\d+)+(?![\d.])"),     # shapes 8×128, 64x128x3
]
_UNIT = r"%|×|x\b|ms\b|µs\b|s\b|min\b(?!\s+[^\W\d])|req/s\b|texts/s\b|bytes\b|MB\b"
_NUMBER = re.compile(
    r"(?P<bound>[≥≤<>]=?\s*)?(?P<sign>[+−-])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:\s?(?P<unit>" + _UNIT + r"))?(?:\s+(?P<sec>\d+)\s?s\b)?")
_CITED_JSON = re.compile(r"bench/results/([\w.-]+\.json)")
_CITED_BENCH = re.compile(r"bench/([\w-]+)\.py")


@dataclass(frozen=True)
class Figure:
    """One figure as written: its value, decimals shown, unit, and the text around it."""

    text: str
    value: float
    decimals: int
    unit: str | None
    context: str

    def candidates(self, x: float) -> Iterator[float]:
        """``x`` in the figure's unit (a fraction as a percentage, seconds as ms, ...)."""
        yield x
        if self.unit == "%":
            yield 100.0 * x
        if self.unit == "ms":
            yield 1000.0 * x

    def matches(self, x: float) -> bool:
        tolerance = 0.5 * 10.0 ** -self.decimals + 1e-9
        return any(abs(c - self.value) <= tolerance for c in self.candidates(x))


def strip_code(text: str) -> str:
    """The text with fenced blocks and inline code replaced by blanks (line structure kept)."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE.sub(lambda m: " " + "\n" * m.group(0).count("\n"), text)


def _mask_non_figures(text: str) -> str:
    for pattern in _NOT_FIGURES:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def figures(text: str) -> list[Figure]:
    """Every figure in ``text`` (rule in the module docstring)."""
    masked = _mask_non_figures(strip_code(text))
    found = []
    for match in _NUMBER.finditer(masked):
        num, unit, bound = match.group("num"), match.group("unit"), match.group("bound")
        start = match.start()
        if bound or (start > 0 and (masked[start - 1].isalnum() or masked[start - 1] in "_/.#")):
            continue  # a bound / target, or part of a name (layer0, p99, icd_runA, v2)
        if "." not in num and unit is None:
            continue  # a plain count
        value = float(num.replace(",", ""))
        decimals = len(num.split(".")[1]) if "." in num else 0
        if unit == "min" and match.group("sec"):
            value, decimals, unit = value * 60 + int(match.group("sec")), 0, "s"
        elif unit == "min":
            value, unit = value * 60, "s"
        if match.group("sign") in ("−", "-"):
            value = -value
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        found.append(Figure(match.group(0).strip(), value, decimals, unit,
                            text[line_start: line_end if line_end >= 0 else None].strip()))
    return found


def blocks(text: str) -> list[str]:
    """Paragraphs, list items and tables of a Markdown text (code blocks kept inside their block)."""
    text = _FENCE.sub(lambda m: m.group(0).replace("\n\n", "\n \n"), text)
    out, current = [], []
    for line in text.splitlines():
        starts_item = re.match(r"\s*(?:[-*] |\d+\. )", line) is not None
        if not line.strip() or (starts_item and current and not current[-1].lstrip().startswith("|")):
            if current:
                out.append("\n".join(current))
            current = [line] if line.strip() else []
            continue
        current.append(line)
    if current:
        out.append("\n".join(current))
    return out


def section(text: str, heading: str) -> str:
    """The body under the Markdown heading ``heading`` (up to the next heading of the same or higher level)."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise KeyError(heading) from None
    end = next((i for i in range(start + 1, len(lines))
                if re.match(r"#{1,%d} " % level, lines[i])), len(lines))
    return "\n".join(lines[start + 1: end])


def numbers_of(doc: object) -> Iterator[float]:
    """Every number in a JSON document: numeric leaves and numbers written inside strings."""
    if isinstance(doc, bool) or doc is None:
        return
    if isinstance(doc, (int, float)):
        yield float(doc)
    elif isinstance(doc, str):
        for match in re.finditer(r"-?\d+(?:\.\d+)?", doc.replace(",", "")):
            yield float(match.group(0))
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield from numbers_of(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from numbers_of(value)


def _keys(doc: object) -> Iterator[str]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield key
            yield from _keys(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _keys(value)


def _has_load(doc: object) -> bool:
    """Whether some key naming a load average (``load_average``, ``load_avg_1m_at_end``, ``loadavg_...``) holds
    a number."""
    if isinstance(doc, dict):
        return any(("load" in key.lower() and any(True for _ in numbers_of(value))) or _has_load(value)
                   for key, value in doc.items())
    if isinstance(doc, list):
        return any(_has_load(value) for value in doc)
    return False


def provenance_problems(doc: object) -> list[str]:
    """What a results JSON fails to record of: command, machine, date, load average (empty list: all there).

    ``icd.io.bench_result.BenchRecord`` writes top-level ``command``, ``machine``, ``date``, ``load_average``.
    Older files are read as written: ``date_utc`` or ``measured_at`` is a date, any key naming a load average that holds a
    number is a load average. A list of rows must carry them in every row. A command must not write into a
    temporary folder (the file would not be the one committed)."""
    rows = doc if isinstance(doc, list) else [doc]
    problems = []
    for key, aliases in (("command", ("command",)), ("machine", ("machine",)), ("date", ("date", "date_utc", "measured_at"))):
        if not rows or not all(isinstance(row, dict) and any(row.get(a) not in (None, "", {}) for a in aliases)
                               for row in rows):
            problems.append(key)
    if not rows or not all(_has_load(row) for row in rows):
        problems.append("load_average")
    for row in rows:
        command = row.get("command") if isinstance(row, dict) else None
        if isinstance(command, str) and "/tmp" in command:
            problems.append(f"command writes into a temporary folder ({command})")
    return problems


def load_results(folder: Path = RESULTS) -> dict[str, object]:
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def cited_results(block: str, names: Iterable[str]) -> set[str]:
    """The results JSONs a block names (directly, or through its bench script). A cited JSON that is not
    committed, or a bench script with none, is named all the same (``<bench>.json``): it backs nothing."""
    names = set(names)
    cited = set(_CITED_JSON.findall(block))
    for bench in _CITED_BENCH.findall(block):
        written = {name for name in names if name == f"{bench}.json" or name.startswith(f"{bench}_")}
        cited |= written or {f"{bench}.json"}
    return cited


def evidence_numbers(results: dict[str, object]) -> dict[str, list[float]]:
    """The numbers of every results JSON that is evidence (records its provenance)."""
    return {name: list(numbers_of(doc)) for name, doc in results.items() if not provenance_problems(doc)}


def _is_table(block: str) -> bool:
    return block.lstrip().startswith("|")


def cited_blocks(text: str, results: dict[str, object]) -> Iterator[tuple[str, set[str]]]:
    """Each block of ``text`` with the results JSONs it cites: its own, its heading's (up to the next heading),
    and for a table those of the paragraph just before it (its caption)."""
    heading: set[str] = set()
    caption: set[str] = set()
    for block in blocks(text):
        first = block.lstrip()
        if first.startswith("#"):
            title, _, rest = first.partition("\n")
            heading = cited_results(title, results)
            caption = set()
            if not rest.strip():
                continue
            block = rest
        cited = cited_results(block, results) | heading
        if _is_table(block):
            cited |= caption
        else:
            caption = cited_results(block, results)
        yield block, cited


def unbacked(text: str, results: dict[str, object], *, cited_only: bool = False) -> list[tuple[Figure, set[str]]]:
    """The figures of ``text`` that the JSONs their block cites do not back, each with those JSONs.

    A figure in a block citing no JSON is unbacked; with ``cited_only`` such blocks are not read (docs: the
    figures a doc attributes to a benchmark are checked)."""
    evidence = evidence_numbers(results)
    missing = []
    for block, cited in cited_blocks(text, results):
        if cited_only and not cited:
            continue
        pool = [x for name in cited for x in evidence.get(name, [])]
        for figure in figures(block):
            if not any(figure.matches(x) for x in pool):
                missing.append((figure, cited))
    return missing


def temporary_paths(text: str) -> list[str]:
    """Lines that cite a temporary folder (``/tmp/...``) outside code."""
    return [line.strip() for line in strip_code(text).splitlines() if re.search(r"(?<![\w.])/tmp/", line)]
