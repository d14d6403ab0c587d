"""CI under background load: ``make test`` on a clean clone, several times in a row, while CPU burners run.

    .venv/bin/python bench/ci_under_load.py [--runs 3] [--burners 1] [--workdir /tmp/icd_ci_load]
                                            [--report bench/results/ci_under_load.json]

CI machines are shared and loaded; a test that fails by timing alone blocks every landing. This bench shows the
suite does not: it clones the repository's HEAD once (a clean clone, as CI does), starts ``--burners`` CPU-bound
processes (``while True: pass``, normal priority, one per busy core) that run for the whole bench, then runs
``CI=true bash .ci/run`` (``make test``: set-up, then every test, e2e included) ``--runs`` times in a row in that
clone. The first run includes the set-up of the clone's venv; later runs reuse it, as a developer's re-run does.
The 1-minute load average is sampled every 15 s during each run and recorded (min / median / max), with each run's
exit status, wall time and pytest summary line. It stops at the first red run (its log tail is recorded).

The JSON carries the provenance of every bench (icd.io.bench_result), ``load_high`` by the rule of every bench
(1-minute load above cores + 1 at start or end); the load this bench adds on purpose is in ``burners`` and in each
run's sampled ``load_1m``. Logs stay in ``--workdir`` (a red run's tail is copied into the JSON).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from icd.io.bench_result import BenchRecord  # noqa: E402

SUMMARY = re.compile(r"(?P<body>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s")
BURNER_CODE = "while True:\n    pass\n"
SAMPLE_SECONDS = 15.0


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds on a daemon thread until stopped."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(round(os.getloadavg()[0], 2))
            self._stop.wait(self.interval)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0}
        return {"samples": len(self.samples), "min": min(self.samples),
                "median": round(statistics.median(self.samples), 2), "max": max(self.samples)}


def start_burners(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", BURNER_CODE]) for _ in range(count)]


def stop_burners(burners: list[subprocess.Popen[bytes]]) -> None:
    for burner in burners:
        burner.terminate()
    for burner in burners:
        try:
            burner.wait(timeout=10)
        except subprocess.TimeoutExpired:
            burner.kill()


def clone(source: Path, target: Path) -> str:
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["git", "clone", "-q", str(source), str(target)], check=True)
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=target, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def pytest_summary(log_text: str) -> dict[str, Any]:
    """The counts and seconds of pytest's last summary line (``1020 passed, 1 skipped in 1152.13s``)."""
    matches = list(SUMMARY.finditer(log_text))
    if not matches:
        return {"line": None}
    last = matches[-1]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (\w+)", last.group("body"))}
    return {"line": last.group(0).strip("= "), "counts": counts, "pytest_seconds": float(last.group("seconds"))}


def run_ci(clone_dir: Path, log_path: Path, pytest_args: str) -> dict[str, Any]:
    env = {**os.environ, "CI": "true", "PYTEST_ARGS": pytest_args}
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    with LoadSampler() as sampler, log_path.open("w", encoding="utf-8") as log:
        done = subprocess.run(["bash", ".ci/run"], cwd=clone_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    wall = round(time.monotonic() - started, 1)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    result = {"rc": done.returncode, "wall_seconds": wall, "load_1m": sampler.summary(), **pytest_summary(text)}
    if done.returncode != 0:
        result["log_tail"] = text[-4000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="make test runs in a row (default 3)")
    parser.add_argument("--burners", type=int, default=1, help="CPU-bound background processes (default 1)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/icd_ci_load"), help="where the clone goes")
    parser.add_argument("--pytest-args", default="-q", help="PYTEST_ARGS for .ci/run (default -q)")
    parser.add_argument("--report", type=Path, default=REPO / "bench/results/ci_under_load.json")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burners < 0:
        parser.error(f"--runs must be >= 1 and --burners >= 0 (got {args.runs}, {args.burners})")

    record = BenchRecord.start(None if argv is None else [sys.argv[0], *argv])
    args.workdir.mkdir(parents=True, exist_ok=True)
    clone_dir = args.workdir / "clone"
    head = clone(REPO, clone_dir)
    print(f"[ci-under-load] clone of {head[:12]} in {clone_dir}; {args.burners} burner(s), {args.runs} run(s)",
          flush=True)
    runs: list[dict[str, Any]] = []
    burners = start_burners(args.burners)
    try:
        for index in range(1, args.runs + 1):
            result = run_ci(clone_dir, args.workdir / f"run{index}.log", args.pytest_args)
            runs.append({"run": index, **result})
            print(f"[ci-under-load] run {index}: rc {result['rc']}, {result['wall_seconds']} s, "
                  f"{result.get('line')}, load 1m {result['load_1m']}", flush=True)
            if result["rc"] != 0:
                break
    finally:
        stop_burners(burners)
    green = [run["rc"] == 0 for run in runs]
    figures = {
        "what": "make test (CI=true bash .ci/run) on a clean clone, runs in a row, with CPU burners running",
        "git_head": head,
        "burners": args.burners,
        "runs_requested": args.runs,
        "runs": runs,
        "green_in_a_row": green.index(False) if False in green else len(green),
        "all_green": len(runs) == args.runs and all(green),
    }
    record.write(args.report, figures)
    print(f"[ci-under-load] wrote {args.report}: all_green={figures['all_green']}", flush=True)
    return 0 if figures["all_green"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
