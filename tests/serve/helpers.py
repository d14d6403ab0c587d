"""Helpers for the serving tests: real tokenized text, in-process references, HTTP/gRPC inference, metrics."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

SEQ_LEN = 32


def tokenize(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = tokenizer(texts, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np")
    return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)


def references(run_dir: Path) -> dict[str, torch.nn.Module]:
    """The in-process models the exports came from: ``bert_icd`` (run model) and ``bert_baseline``."""
    from icd.config.schema import IcdConfig
    from icd.model.loader import load_encoder
    from icd.pipeline.model_store import load_run_encoder

    lock = json.loads((run_dir / "config.lock.json").read_text())
    return {"bert_icd": load_run_encoder(run_dir / "model"),
            "bert_baseline": load_encoder(IcdConfig.model_validate(lock).model)}


def in_process(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def infer_http(url: str, model: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url.removeprefix("http://")) as client:
        return client.infer(model, _inputs(httpclient, ids, mask)).as_numpy("logits")


def infer_grpc(url: str, model: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        return client.infer(model, _inputs(grpcclient, ids, mask)).as_numpy("logits")


def infer_concurrently(url: str, model: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One single-row HTTP request per row, all at once (so Triton's dynamic batcher can batch them)."""
    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        rows = pool.map(lambda i: infer_http(url, model, ids[i:i + 1], mask[i:i + 1]), range(len(ids)))
        return np.concatenate(list(rows))


def _inputs(module, ids: np.ndarray, mask: np.ndarray):
    inputs = [module.InferInput("input_ids", list(ids.shape), "INT64"),
              module.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    return inputs


_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels...}`` in a Prometheus exposition (None if absent)."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(3))
    return None


def icd_log_records(log_text: str) -> list[dict]:
    return [json.loads(line.split("ICD ", 1)[1]) for line in log_text.splitlines() if line.startswith("ICD {")]
