from __future__ import annotations

from icd.load.aggregate import IntervalRow, ModelTotals
from icd.load.engine import _next_backoff
from icd.load.problems import stopped_answering


def _row(t: float, ok: int, errors: int) -> IntervalRow:
    return IntervalRow("m", int(t), t, 1.0, False, None, ok + errors, ok, errors, 0, 0.0, 0.0, 0.0, None, None, None,
                       None)


def _totals(connection: int, other: int = 0) -> dict[str, ModelTotals]:
    totals = ModelTotals()
    for _ in range(connection):
        totals.measured.add_error("connection", "ConnectionRefusedError: [Errno 111] Connect call failed")
    for _ in range(other):
        totals.measured.add_error("http_400", "model unavailable")
    return {"m": totals}


def test_a_server_that_stopped_answering_is_named_with_when():
    problems = stopped_answering("http://h:1", _totals(12), {"m": [_row(1, 50, 0), _row(2, 40, 3), _row(3, 0, 9)]})
    assert len(problems) == 1
    assert problems[0].startswith("endpoint http://h:1: m stopped answering (it last answered 2 s into the run; "
                                  "12 requests could not reach it, e.g. ConnectionRefusedError")


def test_a_server_that_came_back_or_only_refused_requests_is_not_a_stop():
    came_back = {"m": [_row(1, 50, 0), _row(2, 0, 9), _row(3, 30, 0)]}
    assert stopped_answering("e", _totals(9), came_back) == []
    refused_by_model = {"m": [_row(1, 50, 0), _row(2, 0, 9)]}  # errors at the end, but answered (HTTP 400)
    assert stopped_answering("e", _totals(0, other=9), refused_by_model) == []


def test_never_answered():
    problems = stopped_answering("e", _totals(3), {"m": [_row(1, 0, 3)]})
    assert problems and "it never answered" in problems[0]


def test_backoff_grows_on_refused_connections_and_resets_on_an_answer():
    waits, current = [], 0.0
    for kind in ["connection"] * 7 + [None] + ["grpc_unavailable"]:
        current = _next_backoff(current, kind)
        waits.append(current)
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.0, 0.05]
    assert _next_backoff(0.4, "http_500") == 0.0 and _next_backoff(0.4, "timeout") == 0.0
