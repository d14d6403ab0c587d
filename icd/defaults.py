"""Named defaults shared across stages (one place, so flags, env vars and config keys agree)."""

from __future__ import annotations

# Ports of the embedded Triton server (Triton's own defaults).
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
ROUTER_PORT = 8080
DEFAULT_PUBLIC_MODEL = "bert"
"""The model name clients call on the router."""

LOOPBACK = "127.0.0.1"

# Percentiles reported everywhere latency is reported.
REPORTED_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)

# Environment variable that points at an icd state directory (pids, logs of started servers).
STATE_DIR_ENV = "ICD_STATE_DIR"
DEFAULT_STATE_DIR = ".icd"

# Offline Hugging Face: never reach a hub.
HF_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# N:M permutation search (icd permute-nm, icd/solver/nm_search.py).
NM_SEARCH_KICKS = 4
NM_SEARCH_TIME_LIMIT_S = 10.0

# Cache of extracted corpus texts (icd/data/corpus.py): $ICD_CACHE_DIR, else $XDG_CACHE_HOME/icd, else ~/.cache/icd.
CACHE_DIR_ENV = "ICD_CACHE_DIR"
