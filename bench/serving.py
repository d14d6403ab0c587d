"""Serving throughput: bert_icd through the embedded Triton vs the same TorchScript model in-process.

    .venv/bin/python bench/serving.py [--run-dir runs/bert_production] [--concurrency 16] [--requests 256]

1. Export ``bert_icd`` from the run (default: an identity-permutation sample run of the real MiniLM classifier,
   built in a temporary folder and labelled as such) to a temporary model repository, start the real
   ``tritonserver`` on free ports.
2. Closed loop: ``--concurrency`` client threads, each sending one real tokenized text per HTTP request until
   ``--requests`` are done; Triton's dynamic batcher forms the batches. Throughput = texts / wall time.
3. The batch sizes Triton formed come from its statistics API (``batch_stats``, difference over the run).
4. In-process: the same ``model.pt`` (torch.jit.load in this process) runs exactly that multiset of batch sizes
   on the same texts; throughput = the same number of texts / the summed time.

Prints both throughputs, their ratio (target >= 0.85) and the batch-size histogram; ``--report`` writes JSON.
On a shared 2-core machine the client threads, the server and the in-process run compete for the same cores:
the figures are what this machine did, not a capacity claim.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

TARGET_RATIO = 0.85


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _texts(count: int) -> list[str]:
    from icd.data.corpus import load_split

    split = load_split(8, max(count, 8), seed=0)
    return split.heldout[:count]


def _batch_counts(http_url: str, model: str) -> Counter:
    stats = httpx.get(f"{http_url}/v2/models/{model}/stats", trust_env=False, timeout=10).json()["model_stats"][0]
    return Counter({int(row["batch_size"]): int(row["compute_infer"]["count"]) for row in stats["batch_stats"]})


def _closed_loop(http_url: str, model: str, ids: np.ndarray, mask: np.ndarray, concurrency: int,
                 requests: int) -> float:
    """Send ``requests`` single-text requests from ``concurrency`` threads; returns the wall time."""
    import tritonclient.http as httpclient

    counter = iter(range(requests))
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        with httpclient.InferenceServerClient(http_url.removeprefix("http://"), connection_timeout=300,
                                              network_timeout=300) as client:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                row = index % len(ids)
                inputs = [httpclient.InferInput("input_ids", [1, ids.shape[1]], "INT64"),
                          httpclient.InferInput("attention_mask", [1, ids.shape[1]], "INT64")]
                inputs[0].set_data_from_numpy(ids[row:row + 1])
                inputs[1].set_data_from_numpy(mask[row:row + 1])
                try:
                    client.infer(model, inputs)
                except Exception as exc:  # noqa: BLE001 - any client failure is reported, then the run fails
                    errors.append(str(exc))
                    return

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"bench/serving.py: {len(errors)} request(s) failed, first: {errors[0]}")
    return wall


def _in_process(model_pt: Path, ids: np.ndarray, mask: np.ndarray, histogram: Counter) -> float:
    """Run the batch-size multiset ``histogram`` through ``model_pt`` in this process; returns the summed time."""
    import torch

    module = torch.jit.load(str(model_pt)).eval()
    total = 0.0
    cursor = 0
    with torch.inference_mode():
        for size in sorted(histogram):  # warm-up of every shape (TorchScript profiles its first runs)
            for _ in range(3):
                module(torch.from_numpy(ids[:size]), torch.from_numpy(mask[:size]))
        for size, count in sorted(histogram.items()):
            for _ in range(count):
                rows = [(cursor + k) % len(ids) for k in range(size)]
                cursor += size
                batch_ids, batch_mask = torch.from_numpy(ids[rows]), torch.from_numpy(mask[rows])
                start = time.perf_counter()
                module(batch_ids, batch_mask)
                total += time.perf_counter() - start
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="run directory (default: an identity sample run, temporary)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per text (padded / truncated)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--report", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)

    from icd.export.options import ExportOptions
    from icd.export.repository import export_model
    from icd.export.sample_run import write_identity_run_dir
    from icd.model.loader import load_tokenizer
    from icd.config.schema import ModelSection
    from icd.serve.triton_local import TritonServer

    work = Path(tempfile.mkdtemp(prefix="icd-bench-serving-"))
    run_dir = args.run_dir
    run_kind = "given run"
    if run_dir is None:
        run_dir = write_identity_run_dir(work / "run")
        run_kind = "identity-sample run (no optimization: icd.export.sample_run)"
    options = ExportOptions(model_name="bert_icd", max_batch_size=args.max_batch_size, preferred_batch_sizes=(),
                            max_queue_delay_us=args.max_queue_delay_us)
    result = export_model(run_dir, work / "models", options)
    tokens = load_tokenizer(ModelSection())(_texts(64), padding="max_length", max_length=args.seq_len,
                                            truncation=True, return_tensors="np")
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)

    server = TritonServer(work / "models", _free_port(), _free_port(), _free_port())
    with server.start(timeout_s=300):
        _closed_loop(server.http_url, "bert_icd", ids, mask, args.concurrency, 2 * args.concurrency)  # warm-up
        before = _batch_counts(server.http_url, "bert_icd")
        wall = _closed_loop(server.http_url, "bert_icd", ids, mask, args.concurrency, args.requests)
        histogram = _batch_counts(server.http_url, "bert_icd") - before
    served = sum(size * count for size, count in histogram.items())
    if served != args.requests:
        raise SystemExit(f"bench/serving.py: statistics report {served} texts, expected {args.requests}")
    in_process_s = _in_process(result.version_dir / "model.pt", ids, mask, histogram)

    triton_tps = args.requests / wall
    inproc_tps = args.requests / in_process_s
    ratio = triton_tps / inproc_tps
    report = {
        "model": "bert_icd", "run": str(run_dir), "run_kind": run_kind, "seq_len": args.seq_len,
        "concurrency": args.concurrency, "requests": args.requests,
        "triton_throughput_texts_per_s": round(triton_tps, 3), "triton_wall_s": round(wall, 3),
        "in_process_throughput_texts_per_s": round(inproc_tps, 3), "in_process_compute_s": round(in_process_s, 3),
        "ratio": round(ratio, 4), "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO,
        "batch_size_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "how": "closed loop over HTTP (tritonclient) vs torch.jit.load of the same model.pt on the batch sizes "
               "Triton's statistics API reports; same texts; this machine, shared cores",
    }
    print(f"run: {run_kind}")
    print(f"Triton (embedded, HTTP, concurrency {args.concurrency}): {triton_tps:.2f} texts/s "
          f"({args.requests} texts in {wall:.2f} s)")
    print(f"in-process TorchScript, same batch sizes:            {inproc_tps:.2f} texts/s "
          f"({in_process_s:.2f} s of compute)")
    print(f"ratio Triton / in-process: {ratio:.3f} (target >= {TARGET_RATIO}: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    print("batch sizes Triton formed (size: executions):")
    for size, count in sorted(histogram.items()):
        print(f"  {size:>3}: {count:>4} {'#' * min(count, 60)}")
    if args.report:
        from icd.io.atomic import write_json_atomic

        write_json_atomic(args.report, report)
        print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
