"""A few threads of plain KServe v2 HTTP requests to Triton — the load of the monitoring e2e tests.

Not the project's load generator (icd/load): just enough traffic to make Triton's metrics move.
"""

from __future__ import annotations

import threading
from collections import Counter

import httpx


def infer_body(seq_len: int = 8) -> dict:
    """A KServe v2 request with the BERT exports' inputs (``input_ids``, ``attention_mask``, INT64 [1, L])."""
    ids = [101, *range(2000, 2000 + seq_len - 2), 102]
    return {"inputs": [
        {"name": "input_ids", "shape": [1, seq_len], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [1, seq_len], "datatype": "INT64", "data": [1] * seq_len},
    ]}


class BackgroundTraffic:
    """``threads`` threads per model posting ``/v2/models/<model>/infer`` back to back until :meth:`stop`."""

    def __init__(self, http_url: str, models: list[str], threads: int = 2, pause_s: float = 0.0) -> None:
        self.http_url = http_url
        self.models = list(models)
        self.threads = threads
        self.pause_s = pause_s
        self.status: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _loop(self, model: str) -> None:
        body = infer_body()
        with httpx.Client(base_url=self.http_url, timeout=30.0, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    code = client.post(f"/v2/models/{model}/infer", json=body).status_code
                except httpx.HTTPError:
                    code = -1
                self.status[(model, code)] += 1
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    def start(self) -> BackgroundTraffic:
        for model in self.models:
            for _ in range(self.threads):
                worker = threading.Thread(target=self._loop, args=(model,), daemon=True)
                worker.start()
                self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
