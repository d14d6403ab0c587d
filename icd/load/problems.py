"""What went wrong in a load run that the figures alone do not say: the server stopped answering.

A closed loop against a server that died keeps "completing" requests — each one a refused connection in
microseconds — so the report would show tens of thousands of requests, an error rate and nothing else. A run is
*cut short by the server* when a model's last interval(s) hold errors and no success, and it had connection
errors (``connection`` over HTTP, ``grpc_unavailable`` over gRPC): the problem names the endpoint, the model,
when it last answered and a sample of the error, and ``icd bench`` exits non-zero after writing the report.
A server that went away and came back (a restart mid-run) is not a problem here: its errors are in the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from icd.load.aggregate import IntervalRow, ModelTotals

CONNECTION_ERROR_KINDS = ("connection", "grpc_unavailable")
"""Error kinds that mean the request never reached a live server."""


def _connection_errors(totals: ModelTotals) -> tuple[int, str]:
    count, sample = 0, ""
    for span in (totals.warmup, totals.measured):
        for kind in CONNECTION_ERROR_KINDS:
            count += span.errors.get(kind, 0)
            sample = sample or span.error_samples.get(kind, "")
    return count, sample


def stopped_answering(endpoint: str, totals: Mapping[str, ModelTotals],
                      series: Mapping[str, Sequence[IntervalRow]]) -> list[str]:
    """One line per model whose server stopped answering before the run ended (empty when none did)."""
    problems = []
    for name, model_totals in totals.items():
        refused, sample = _connection_errors(model_totals)
        rows = series.get(name, ())
        if not refused or not rows:
            continue
        last_ok = max((row.t_s for row in rows if row.ok), default=None)
        tail = [row for row in rows if last_ok is None or row.t_s > last_ok]
        if not tail or not any(row.errors for row in tail):
            continue
        since = "it never answered" if last_ok is None else f"it last answered {last_ok:.0f} s into the run"
        problems.append(f"endpoint {endpoint}: {name} stopped answering ({since}; {refused} requests could not "
                        f"reach it, e.g. {sample[:120]}); the figures cover only the time it answered")
    return problems
