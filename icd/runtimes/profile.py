"""``icd profile RUN``: every runtime × precision of the run's model, exported, verified, timed in one run.

Each variant is exported through its runtime into a temporary folder and loaded back (what is timed is what
``icd export-triton --runtime`` writes). Fidelity: the run's held-out texts, outputs vs the *original* fp32 model
(rebuilt from config.lock.json), cos mean / min and the agreement that fits the task: nearest-neighbour agreement
for embedding models, argmax agreement for classifiers (a classifier's few logits make NN agreement noise).
Latency: the one interleaved harness (:func:`icd.measure.latency.measure_latency_interleaved`): every variant once
per round, same thread count, on what its server would run (``inputs="text"``, the default): held-out texts in
batches padded to ``seq_len`` as clients send them, each batch's trailing padding trimmed as the python backend of
an ``icd export-triton`` export runs it (``icd_trim_padding``) — or on one synthetic full-length batch
(``inputs="random"``). The choice (:mod:`icd.runtimes.choice`, floors ``serve.min_cos`` / ``serve.min_nn``) is
written to ``RUN/runtime_profile.json``; ``icd export-triton`` uses it unless told otherwise.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icd.errors import ArtefactError, ConfigError, UserError
from icd.runtimes.base import Precision, Variant
from icd.runtimes.choice import ProfileRow, choose

if TYPE_CHECKING:
    from icd.measure.latency import Workload

PROFILE_FILE = "runtime_profile.json"
REFERENCE = "reference torch fp32"
INPUTS = ("text", "random")
TIMING_BATCHES = 4
"""Batches of held-out texts each variant runs per timed round (``inputs="text"``)."""


def default_variants(has_int8_record: bool) -> list[Variant]:
    """Every registered runtime × precision (torchscript int8 only for a run with icd's int8)."""
    from icd.runtimes.registry import all_variants

    return [v for v in all_variants()
            if has_int8_record or not (v.runtime == "torchscript" and v.precision == Precision.INT8)]


RECIPE_SEP = "+"
"""A profile row of an OpenVINO int8 recipe other than the default is named ``openvino:int8+<recipe>``."""
RECIPE_VARIANT = Variant("openvino", Precision.INT8)


def recipe_rows(wanted: Sequence[Variant], int8_recipes: Sequence[str]) -> list[tuple[str, Variant, str | None]]:
    """``(row name, variant, recipe)`` of every row to profile: each variant with its default recipe, and
    ``openvino:int8`` once more per named recipe (not the default, no repeats).

    Raises:
        ConfigError: an unknown recipe, or recipes without ``openvino:int8`` among the variants.
    """
    from icd.runtimes.openvino_int8 import DEFAULT_RECIPE, recipe_problem

    problems = [problem for problem in map(recipe_problem, int8_recipes) if problem]
    if problems:
        raise ConfigError(f"icd profile: --int8-recipe: {problems[0]}")
    if int8_recipes and RECIPE_VARIANT not in wanted:
        raise ConfigError("icd profile: --int8-recipe needs openvino:int8 among the profiled variants")
    rows: list[tuple[str, Variant, str | None]] = [(v.name, v, None) for v in wanted]
    for name in dict.fromkeys(int8_recipes):
        if name != DEFAULT_RECIPE:
            rows.append((f"{RECIPE_VARIANT.name}{RECIPE_SEP}{name}", RECIPE_VARIANT, name))
    return rows


def _build(variant: Variant, source, work: Path, threads: int, recipe: str | None = None):
    from icd.runtimes.openvino_int8 import recipe_argument
    from icd.runtimes.registry import get_runtime

    runtime = get_runtime(variant.runtime)
    folder = Path(tempfile.mkdtemp(prefix=variant.runtime + "-", dir=work))
    artefact = runtime.export(source, folder, variant.precision, output_gather=True, threads=threads,
                              **recipe_argument(source, recipe))
    return runtime.load(folder, threads), artefact


def profile_run(run_dir: Path, *, runtimes: Sequence[str] = (), precisions: Sequence[str] = (), threads: int = 2,
                runs: int = 10,
                warmup: int = 3, batch_size: int = 8, seq_len: int = 128, texts: int | None = None,
                int8_recipes: Sequence[str] = (), inputs: str = "text",
                progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Profile the run's model on every variant (or those of ``runtimes`` / ``precisions``; ``openvino:int8`` also
    with each of ``int8_recipes``), choose, write ``RUN/runtime_profile.json``; returns the document.

    Raises:
        ArtefactError / ConfigError: the run directory is not a complete run, no variant matches, or ``inputs``
            is not one of :data:`INPUTS`.
    """
    from icd.config.schema import IcdConfig
    from icd.data.corpus import load_split
    from icd.export.run_inputs import read_run
    from icd.io.atomic import write_json_atomic
    from icd.measure.encode import encode
    from icd.measure.fidelity import CLASSIFICATION_TASK
    from icd.measure.latency import measure_latency_interleaved
    from icd.model.loader import load_encoder
    from icd.runtimes.source import ModelSource

    if inputs not in INPUTS:
        raise ConfigError(f"icd profile: --inputs {inputs!r} is not one of {list(INPUTS)}")
    run_dir = Path(run_dir)
    cfg = IcdConfig.model_validate(read_run(run_dir).config_lock)
    source = ModelSource.from_run(run_dir)
    reference = load_encoder(cfg.model).eval()
    heldout = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed,
                         cfg.data.sources).heldout[:texts]
    wanted = [v for v in default_variants(source.int8_record is not None)
              if (not runtimes or v.runtime in runtimes) and (not precisions or v.precision.value in precisions)]
    if not wanted:
        raise ConfigError(f"icd profile: no variant matches runtimes {list(runtimes)} precisions {list(precisions)}")
    reference_out = encode(reference, source.tokenizer, heldout, cfg.data.batch_size, cfg.model.max_length)
    agreement = "argmax" if cfg.model.task.value == CLASSIFICATION_TASK else "NN"
    work = Path(tempfile.mkdtemp(prefix="icd-profile-"))
    try:
        checked = _check_variants(recipe_rows(wanted, int8_recipes), source, cfg, heldout, reference_out,
                                  agreement, work, threads, progress)
        models = {REFERENCE: reference, **checked.sessions}
        progress(f"[profile] timing {len(models)} models, {runs} interleaved rounds, {threads} threads")
        workload = None if inputs == "random" else served_workload(source.tokenizer, heldout, batch_size, seq_len)
        workloads = None if workload is None else dict.fromkeys(models, workload)
        load_before = os.getloadavg()
        latency = measure_latency_interleaved(models, batch_size, seq_len, warmup=warmup, runs=runs, threads=threads,
                                              workloads=workloads)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [row if row.error is not None else replace(row, latency_median_ms=latency[name].median_ms)
            for name, row in checked.rows.items()]
    doc = _profile_doc(run_dir, cfg, rows, latency, checked.recipes, reference_out, agreement,
                       {"heldout": len(heldout), "inputs": inputs, "load_before": load_before,
                        "load_after": load_after})
    write_json_atomic(run_dir / PROFILE_FILE, doc)
    return doc


@dataclass
class _Checked:
    """Variants built and compared with the reference: a row each, the sessions that loaded, their int8 recipes."""

    rows: dict[str, ProfileRow]
    sessions: dict[str, Any]
    recipes: dict[str, Any]


def _check_variants(planned: Sequence[tuple[str, Variant, str | None]], source: Any, cfg: Any,
                    heldout: Sequence[str], reference_out: Any, agreement: str, work: Path, threads: int,
                    progress: Callable[[str], None]) -> _Checked:
    """Export and load each planned variant, measure its fidelity to the reference; a variant that cannot be
    built is a row carrying its error (never a failed profile)."""
    from icd.measure.encode import encode
    from icd.measure.fidelity import fidelity

    checked = _Checked({}, {}, {})
    for name, variant, recipe in planned:
        progress(f"[profile] {name}: export + load")
        try:
            session, artefact = _build(variant, source, work, threads, recipe)
        except UserError as exc:
            checked.rows[name] = ProfileRow(name, None, None, None, None, str(exc))
            progress(f"[profile] {name}: skipped ({exc})")
            continue
        fid = fidelity(reference_out, encode(session, source.tokenizer, heldout, cfg.data.batch_size,
                                             cfg.model.max_length), cfg.model.task.value)
        agree = fid.argmax_agreement if agreement == "argmax" else fid.nn_agreement
        checked.rows[name] = ProfileRow(name, fid.cos_mean, fid.cos_min, agree, None)
        checked.sessions[name] = session
        checked.recipes[name] = dict(artefact.recipe)
    return checked


def _profile_doc(run_dir: Path, cfg: Any, rows: list[ProfileRow], latency: dict[str, Any], recipes: dict[str, Any],
                 reference_out: Any, agreement: str, how: dict[str, Any]) -> dict[str, Any]:
    """The ``icd.runtime_profile/v1`` document: the rows, the choice under the config's floor, how each figure was
    measured (``how``: held-out count, inputs, load average around the timing)."""
    from icd.measure.fidelity import NEAR_TIE_MARGIN, near_ties

    choice = choose(rows, cfg.serve.min_cos, cfg.serve.min_nn, agreement)
    base_ms = latency[REFERENCE].median_ms
    return {
        "schema": "icd.runtime_profile/v1",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": str(run_dir.resolve()),
        "reference": {"name": REFERENCE, "latency_median_ms": base_ms, "tokens_run": latency[REFERENCE].tokens_run,
                      "how": "the original model rebuilt from config.lock.json, eager torch fp32"},
        "fidelity_how": f"{how['heldout']} held-out texts of the run's split, outputs vs the reference fp32 model",
        "latency_how": latency[REFERENCE].how,
        "inputs": how["inputs"],
        "load_average": {"before_timing": how["load_before"], "after_timing": how["load_after"]},
        "floor": {"min_cos": cfg.serve.min_cos, "min_nn": cfg.serve.min_nn},
        "agreement": agreement,
        "agreement_how": "rows' agreement: argmax agreement (same predicted class) for classifiers, "
                         "nearest-other-text agreement for embedding models",
        "near_ties": None if agreement == "argmax" else {
            "texts": near_ties(reference_out), "margin": NEAR_TIE_MARGIN,
            "how": "held-out texts whose nearest and second-nearest other text (reference outputs, cosine) are "
                   "within the margin: any small error can swap them, so each can move NN agreement by 1/texts"},
        "rows": [{**asdict(r), "speedup": None if r.latency_median_ms is None else base_ms / r.latency_median_ms,
                  "tokens_run": latency[r.variant].tokens_run if r.variant in latency else None,
                  "latency_ratio_to_choice": _ratio_to(latency, r.variant, choice.variant),
                  "recipe": recipes.get(r.variant)} for r in rows],
        "choice": asdict(choice),
    }


def served_workload(tokenizer: Any, texts: Sequence[str], batch_size: int, seq_len: int) -> Workload:
    """Up to :data:`TIMING_BATCHES` full batches of ``texts`` (a seeded draw; one short batch when there are fewer
    texts than ``batch_size``) padded to ``seq_len`` as clients send them, then cut as the python backend of a
    default export runs them (:func:`trim_batch` at :func:`icd.export.repository.padding_trim`'s multiple)."""
    import random

    import torch

    from icd.export.options import ExportOptions
    from icd.export.repository import padding_trim
    from icd.measure.latency import Workload
    from icd.serve.backend.icd_runtime import trim_batch

    count = min(len(texts), TIMING_BATCHES * batch_size)
    chosen = random.Random(0).sample(list(texts), count if count < batch_size else count - count % batch_size)
    sent = tokenizer(chosen, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    ids, mask = sent["input_ids"], sent["attention_mask"]
    multiple = padding_trim(ExportOptions())[0]
    batches = [tuple(torch.from_numpy(part) for part in trim_batch(ids[start:start + batch_size],
                                                                   mask[start:start + batch_size], multiple))
               for start in range(0, len(chosen), batch_size)]
    return Workload(tuple(batches), f"{len(chosen)} held-out texts in batches of {batch_size}, padded to {seq_len} "
                                    f"tokens, each batch's trailing padding trimmed to a multiple of {multiple} as "
                                    "the python backend serves it")


def read_choice(run_dir: Path) -> tuple[Variant, str | None] | None:
    """The variant ``icd profile`` chose for this run and its int8 recipe when the choice named one
    (``openvino:int8+<recipe>``), or None when the run was not profiled.

    Raises:
        ArtefactError: the profile file is unreadable or names no valid variant or recipe.
    """
    from icd.io.json_artefact import read_json_artefact
    from icd.runtimes.openvino_int8 import recipe_problem

    path = Path(run_dir) / PROFILE_FILE
    if not path.is_file():
        return None
    doc = read_json_artefact(path)
    choice = doc.get("choice") if isinstance(doc, dict) else None
    value = choice.get("variant") if isinstance(choice, dict) else None
    if not isinstance(value, str):
        raise ArtefactError(f"{path}: field choice.variant is missing or not a string (got {value!r}); re-run "
                            f"`icd profile {run_dir}`, or export with --runtime")
    name, _, recipe = value.partition(RECIPE_SEP)
    try:
        variant = Variant.parse(name)
    except ValueError as exc:
        raise ArtefactError(f"{path}: choice.variant {value!r}: {exc}") from None
    if recipe and variant != RECIPE_VARIANT:
        raise ArtefactError(f"{path}: choice.variant {value!r}: only openvino:int8 takes a recipe")
    problem = recipe_problem(recipe) if recipe else None
    if problem:
        raise ArtefactError(f"{path}: choice.variant {value!r}: {problem}")
    return variant, recipe or None


def _ratio_to(latency: dict[str, Any], name: str, chosen: str) -> dict[str, Any] | None:
    """``name``'s latency over the chosen variant's, round by round (median and 95 % bootstrap interval); None for a
    row that was not timed."""
    from icd.measure.latency import paired_ratio

    if name not in latency:
        return None
    return paired_ratio(latency[name].samples_ms, latency[chosen].samples_ms).to_dict()


def render_table(doc: dict[str, Any]):
    """A rich Table of a profile document (chosen row marked; a profile written before ``latency_ratio_to_choice``
    was recorded shows that column empty)."""
    from rich.table import Table

    from icd.measure.latency import ratio_text

    floor = doc["floor"]
    agreement = doc["agreement"]
    table = Table(title=f"runtimes × precisions (floor: cos mean >= {floor['min_cos']}, "
                        f"{agreement} >= {floor['min_nn']})")
    for column in ("variant", "cos mean", "cos min", agreement, "median ms", "tokens", "× ref", "ms × chosen", ""):
        table.add_column(column, justify="left" if column in ("variant", "") else "right")
    table.add_row(REFERENCE, "1.00000", "1.0000", "1.000", f"{doc['reference']['latency_median_ms']:.1f}",
                  _tokens(doc["reference"].get("tokens_run")), "1.00", "", "")
    chosen = doc["choice"]["variant"]
    for row in doc["rows"]:
        if row["error"]:
            table.add_row(row["variant"], "-", "-", "-", "-", "-", "-", "-", f"not measured: {row['error']}")
            continue
        mark = "chosen" if row["variant"] == chosen else ""
        table.add_row(row["variant"], f"{row['cos_mean']:.5f}", f"{row['cos_min']:.4f}", f"{row['agreement']:.3f}",
                      f"{row['latency_median_ms']:.1f}", _tokens(row.get("tokens_run")), f"{row['speedup']:.2f}",
                      ratio_text(row.get("latency_ratio_to_choice")), mark)
    ties = doc.get("near_ties")
    table.caption = f"timed on: {doc['latency_how']}"
    if ties:
        table.caption += (f"\n{ties['texts']} held-out text(s) have a near tie (two nearest other texts within "
                         f"{ties['margin']} cosine): each can flip NN agreement under any small error")
    return table


def _tokens(value: float | None) -> str:
    """Columns run per row (a profile written before ``tokens_run`` was recorded: empty)."""
    return "" if value is None else f"{value:.1f}"

