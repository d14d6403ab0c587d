"""Run docs/guide.md in full on the embedded stack and record each command's exit code and wall time.

    python bench/guide_run.py [--short-durations S] [--substitute OLD=NEW ...] [--out bench/results/guide_run.json]

Without options this is the unsubstituted guide: configs/bert.json, the guide's durations (``--duration 1800``
...), the guide's ports (8000, 9090, 3000, 8001, ...: they must be free). It runs in a scratch copy of
``deploy/``, ``configs/`` and ``scripts/`` (``--workdir``, default a new temporary folder), stops every service it
started at the end, and writes ``bench/results/guide_run.json``: the exact command, machine, date, load average
at start and end, versions, and per command: section, guide line, the command as written and as run, exit code,
wall seconds, the end of its output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from icd.io.atomic import write_json_atomic  # noqa: E402
from icd.io.ports import free_port  # noqa: E402
from icd.stack.guide_runner import (PORT_VARIABLES, SHORT_ENV, RunOptions, ci_options, make_workspace, parse_guide,  # noqa: E402
                                    run_guide, stop_workspace_stacks)


def _load() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def _cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _commit() -> str:
    import subprocess

    if os.environ.get("ICD_SOURCE_COMMIT"):  # a frozen export of the tree (git archive) has no .git
        return os.environ["ICD_SOURCE_COMMIT"]
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _versions() -> dict[str, str]:
    import torch

    from icd.serve.triton_env import tritonserver_binary

    return {"python": platform.python_version(), "torch": torch.__version__,
            "tritonserver": str(tritonserver_binary().parent.parent.name), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guide", type=Path, default=REPO / "docs" / "guide.md")
    parser.add_argument("--short-durations", type=float, default=float(os.environ[SHORT_ENV]) if os.environ.get(
        SHORT_ENV) else None, help=f"cap every duration flag (seconds; default ${SHORT_ENV})")
    parser.add_argument("--substitute", action="append", default=[], help="OLD=NEW text substitution")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--ci", action="store_true",
                        help="the shortened variant tests/guide runs (free ports, CI config, short durations)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "guide_run.json")
    args = parser.parse_args(argv)
    work = make_workspace(REPO, args.workdir or Path(tempfile.mkdtemp(prefix="icd-guide-run-")) / "guide")
    substitutions = [tuple(item.split("=", 1)) for item in args.substitute]
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "ICD_STATE_DIR": ""}
    if args.ci:
        options = ci_options(work, {guide: free_port() for guide in PORT_VARIABLES}, env)
        substitutions = list(options.substitutions)
    else:
        options = RunOptions(cwd=work, short_s=args.short_durations, substitutions=substitutions, env=env,
                             timeout_s=6 * 3600)
    commands = parse_guide(args.guide)
    record = {
        "name": "guide_run",
        "command": " ".join([sys.executable, *sys.argv]),
        "guide": str(args.guide.relative_to(REPO)) if args.guide.is_relative_to(REPO) else str(args.guide),
        "substitutions": [f"{a}={b}" for a, b in substitutions], "short_durations_s": options.short_s,
        "appends": [f"{a}: {b}" for a, b in options.appends], "ports": {str(k): v for k, v in options.ports.items()},
        "machine": {"cpu": _cpu(), "cores": os.cpu_count()},
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": _load(), "versions": _versions(), "commit": _commit(), "commands": [],
    }
    began = time.perf_counter()

    def show(result) -> bool:
        record["commands"].append(result.to_dict())
        print(f"[{result.returncode:3d}] {result.seconds:8.1f}s  {result.section}: {result.ran[:100]}", flush=True)
        write_json_atomic(args.out.with_suffix(".partial.json"), record)
        return True

    try:
        run_guide(commands, options, show)
    finally:
        stop_workspace_stacks(work)
    record["load_average_end"] = _load()
    record["wall_s"] = round(time.perf_counter() - began, 1)
    record["failed"] = [f"line {c['line']}: {c['command']} (exit {c['returncode']})" for c in record["commands"]
                        if c["returncode"] != 0]
    high = max(record["load_average_start"][0], record["load_average_end"][0]) > (os.cpu_count() or 1)
    record["note"] = ("machine load was high (load average above the core count): wall times include waiting for "
                      "CPU" if high else "load average at or below the core count")
    write_json_atomic(args.out, record)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"{len(record['commands'])} commands, {len(record['failed'])} failed, {record['wall_s']} s -> {args.out}")
    return 0 if not record["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
