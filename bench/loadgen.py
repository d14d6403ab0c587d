"""Bench: icd's load generator vs Locust vs wrk against the same trivial nginx endpoint, plus percentile accuracy
against the synthetic injected-latency server. Prints each tool's rate and the ratios and writes them to
bench/results/loadgen.json (with the command, machine, date and load average); exits 1 if a target is missed.

Targets (2-core machine): open loop ≥ 5,000 req/s with < 1 % late sends; ≥ 3× Locust; ratio to wrk printed
(aim ≥ 50 %); percentiles within 10 % of the injected distribution.

Run: ``.venv/bin/python bench/loadgen.py [--duration 10] [--rate 5000] [--out bench/results/loadgen.json]``
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from icd.io.bench_result import BenchRecord
from icd.load import LoadSettings, Target, run_load
from icd.load.testserver import DelaySpec, InjectedLatencyServer

MODEL = "trivial"
SEQ = 8
DELAY = "uniform:20:80"
PERCENTILE_RATE = 200.0
PERCENTILE_TOLERANCE = 0.10
BODY = json.dumps({"inputs": [
    {"name": "input_ids", "shape": [1, SEQ], "datatype": "INT64", "data": [101] + [2000] * (SEQ - 2) + [102]},
    {"name": "attention_mask", "shape": [1, SEQ], "datatype": "INT64", "data": [1] * SEQ}]}, separators=(",", ":"))
META = json.dumps({"name": MODEL, "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                                            {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}],
                   "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]})
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port};
    location = /v2/models/{model} {{ default_type application/json; return 200 '{meta}'; }}
    location = /v2/models/{model}/config {{ default_type application/json; return 200 '{{"max_batch_size":0}}'; }}
    location / {{ default_type application/json; return 200 '{{"outputs":[]}}'; }}
  }}
}}
"""
LOCUSTFILE = """
from locust import FastHttpUser, task
BODY = {body!r}
class U(FastHttpUser):
    @task
    def infer(self):
        self.client.post("/v2/models/{model}/infer", data=BODY, headers={{"Content-Type": "application/json"}})
"""
WRK_LUA = 'wrk.method = "POST"\nwrk.body = {body!r}\nwrk.headers["Content-Type"] = "application/json"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx on a free port answering 200, config in a temp dir; stopped by PID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=self.port, model=MODEL, meta=META))
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_icd(url: str, **kw) -> dict:
    settings = LoadSettings(inputs="random", input_shape=SEQ, workers=2, timeout_s=5.0, **kw)
    return run_load(settings, Target(url, [MODEL])).to_dict()


def run_locust(url: str, tmp: Path, duration: int, users: int) -> float:
    locustfile = tmp / "locustfile.py"
    locustfile.write_text(LOCUSTFILE.format(body=BODY, model=MODEL))
    locust = Path(sys.executable).with_name("locust")
    cmd = [str(locust), "-f", str(locustfile), "--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s",
           "--host", url, "--csv", str(tmp / "locust"), "--only-summary", "--processes", "2", "--loglevel", "ERROR"]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 60)
    with open(tmp / "locust_stats.csv") as fh:
        for row in csv.DictReader(fh):
            if row["Name"] == "Aggregated":
                return float(row["Requests/s"])
    raise RuntimeError("no Locust summary")


def run_wrk(url: str, tmp: Path, duration: int, connections: int) -> float:
    lua = tmp / "post.lua"
    lua.write_text(WRK_LUA.format(body=BODY))
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(lua),
                          f"{url}/v2/models/{MODEL}/infer"], capture_output=True, text=True, timeout=duration + 30).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk output not understood: {out}")
    return float(match.group(1))


def percentile_check(duration: float) -> list[dict]:
    spec = DelaySpec.parse(DELAY)
    with InjectedLatencyServer(free_port(), delay=DELAY, models=(MODEL,)) as server:
        rep = run_icd(server.url, rate=PERCENTILE_RATE, arrival="poisson", duration_s=duration)
    rows = []
    for pct in (50.0, 90.0, 99.0):
        measured, expected = rep["latency_ms"][f"p{pct:g}"], spec.percentile_ms(pct)
        error = abs(measured - expected) / expected
        rows.append({"percentile": f"p{pct:g}", "measured_ms": measured, "expected_ms": round(expected, 3),
                     "error_percent": round(100 * error, 2), "within_tolerance": error <= PERCENTILE_TOLERANCE})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loadgen.json")
    args = parser.parse_args()
    if not shutil.which("nginx") or not shutil.which("wrk"):
        print("nginx and wrk are needed (Debian packages)")
        return 2
    record = BenchRecord.start()
    with tempfile.TemporaryDirectory(prefix="icd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        nginx = Nginx(tmp)
        try:
            open_rep = run_icd(nginx.url, rate=args.rate, duration_s=args.duration, warmup_s=1.0)
            closed_rep = run_icd(nginx.url, concurrency=args.connections, duration_s=args.duration, warmup_s=1.0)
            locust_rps = run_locust(nginx.url, tmp, args.duration, args.connections)
            wrk_rps = run_wrk(nginx.url, tmp, args.duration, args.connections)
        finally:
            nginx.stop()
    late = open_rep["late_send_fraction"] or 0.0
    icd_open, icd_max = open_rep["throughput_rps"], closed_rep["throughput_rps"]
    best = max(icd_open, icd_max)
    percentiles = percentile_check(max(5.0, args.duration / 2))
    figures = {
        "open_loop": {"target_rps": args.rate, "achieved_rps": round(icd_open, 1), "late_percent": round(100 * late, 2),
                      "late_ms": open_rep["settings"]["late_ms"], "errors": open_rep["errors"]["total"],
                      "p99_ms": open_rep["latency_ms"]["p99"], "workers": 2},
        "closed_loop": {"connections": args.connections, "rps": round(icd_max, 1), "errors": closed_rep["errors"]["total"],
                        "workers": 2},
        "locust": {"user_class": "FastHttpUser", "processes": 2, "users": args.connections, "rps": round(locust_rps, 1)},
        "wrk": {"threads": 2, "connections": args.connections, "rps": round(wrk_rps, 1)},
        "ratios": {"icd_over_locust": round(best / locust_rps, 2), "icd_percent_of_wrk": round(100 * best / wrk_rps, 1)},
        "percentiles": {"delay": DELAY, "rate_rps": PERCENTILE_RATE, "arrival": "poisson",
                        "tolerance_percent": round(100 * PERCENTILE_TOLERANCE), "rows": percentiles},
    }
    checks = {"open loop >= 5000 req/s": icd_open >= 5000, "late sends < 1%": late < 0.01,
              "icd >= 3x locust": best >= 3 * locust_rps, "icd >= 50% of wrk (aim)": best >= 0.5 * wrk_rps}
    checks.update({f"{row['percentile']} within {figures['percentiles']['tolerance_percent']}%": row["within_tolerance"]
                   for row in percentiles})
    doc = record.write(args.out, {**figures, "checks": checks})
    load = doc["load_average"]
    print(f"machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, load average {load['start']} -> "
          f"{load['end']}{' (HIGH: other jobs shared the CPUs)' if doc['load_high'] else ''}")
    print(f"icd open loop   target {args.rate:.0f}/s: achieved {icd_open:.0f} req/s, late sends {late:.2%} "
          f"(> {open_rep['settings']['late_ms']} ms), errors {open_rep['errors']['total']}, "
          f"p99 {open_rep['latency_ms']['p99']} ms")
    print(f"icd closed loop {args.connections} conns: {icd_max:.0f} req/s, errors {closed_rep['errors']['total']}")
    print(f"locust (FastHttpUser, 2 processes, {args.connections} users): {locust_rps:.0f} req/s")
    print(f"wrk (2 threads, {args.connections} conns): {wrk_rps:.0f} req/s")
    print(f"ratio icd/locust: {best / locust_rps:.2f}x   ratio icd/wrk: {best / wrk_rps:.1%}")
    print(f"percentiles vs injected {DELAY} ms (open loop {PERCENTILE_RATE:.0f}/s, Poisson):")
    for row in percentiles:
        print(f"  {row['percentile']}: measured {row['measured_ms']:.2f} ms, expected {row['expected_ms']:.2f} ms, "
              f"{'ok' if row['within_tolerance'] else 'OFF'}")
    for name, good in checks.items():
        print(f"{'PASS' if good else 'MISS'} {name}")
    print(f"wrote {args.out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
