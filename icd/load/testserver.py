"""A synthetic KServe-v2 test server with a *known injected* latency distribution (not a model; for tests/bench).

Each ``POST /v2/models/{m}/infer`` checks the inputs, sleeps a delay drawn from the given distribution and answers
FP32 ``logits`` of zeros. Optionally it *stalls*: every request that arrives during ``[first request +
stall_after_s, + stall_ms]`` is held until the stall ends (a server pause, for coordinated-omission checks).

Delay specs: ``fixed:MS``, ``uniform:LOW_MS:HIGH_MS``, ``exp:MEAN_MS``.

Run: ``python -m icd.load.testserver --port 18080 --delay uniform:50:150 --models synthetic``
(prints ``ready`` once listening). :class:`InjectedLatencyServer` runs it as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType

from icd.errors import UserError

SEQ_ANY = -1


@dataclass(frozen=True)
class DelaySpec:
    """A latency distribution in milliseconds."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> DelaySpec:
        parts = text.split(":")
        try:
            nums = [float(x) for x in parts[1:]]
        except ValueError:
            raise ValueError(f"delay {text!r}: numbers expected") from None
        if parts[0] == "fixed" and len(nums) == 1 and nums[0] >= 0:
            return cls("fixed", nums[0])
        if parts[0] == "uniform" and len(nums) == 2 and 0 <= nums[0] <= nums[1]:
            return cls("uniform", nums[0], nums[1])
        if parts[0] == "exp" and len(nums) == 1 and nums[0] > 0:
            return cls("exp", nums[0])
        raise ValueError(f"delay {text!r}: expected fixed:MS, uniform:LOW:HIGH or exp:MEAN")

    def sample_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.expovariate(1.0 / self.a)

    def percentile_ms(self, pct: float) -> float:
        """The distribution's exact percentile (what a correct generator should measure, plus overhead)."""
        import math

        q = pct / 100.0
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return self.a + q * (self.b - self.a)
        return -self.a * math.log(1.0 - q)


def build_app(models: list[str], delay: DelaySpec, seq: int = SEQ_ANY, stall_after_s: float | None = None,
              stall_ms: float = 0.0, seed: int = 0, error_every: int = 0):
    from aiohttp import web

    rng = random.Random(seed)
    state: dict[str, float] = {"count": 0}

    def meta(name: str) -> dict:
        tensor = {"datatype": "INT64", "shape": [-1, seq]}
        return {"name": name, "versions": ["1"], "platform": "synthetic",
                "inputs": [{"name": "input_ids", **tensor}, {"name": "attention_mask", **tensor}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]}

    def known(request: web.Request) -> str:
        name = request.match_info["model"]
        if name not in models:
            raise web.HTTPNotFound(text=json.dumps({"error": f"Request for unknown model: '{name}' is not found"}))
        return name

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def model_meta(request: web.Request) -> web.Response:
        return web.json_response(meta(known(request)))

    async def model_ready(request: web.Request) -> web.Response:
        known(request)
        return web.Response()

    async def model_config(request: web.Request) -> web.Response:
        return web.json_response({"name": known(request), "max_batch_size": 64})

    async def infer(request: web.Request) -> web.Response:
        arrived = time.monotonic()
        name = known(request)
        body = await request.json()
        inputs = {t["name"]: t for t in body.get("inputs", [])}
        if set(inputs) != {"input_ids", "attention_mask"}:
            return web.json_response({"error": f"expected input_ids and attention_mask, got {sorted(inputs)}"}, status=400)
        batch = int(inputs["input_ids"]["shape"][0])
        state["count"] += 1
        if error_every and state["count"] % error_every == 0:
            return web.json_response({"error": f"injected failure (every {error_every}th request)"}, status=500)
        first = state.setdefault("first", arrived)
        if stall_after_s is not None:
            start = first + stall_after_s
            end = start + stall_ms / 1000.0
            if start <= arrived < end:
                await asyncio.sleep(end - arrived)
        await asyncio.sleep(delay.sample_ms(rng) / 1000.0)
        out = {"name": "logits", "datatype": "FP32", "shape": [batch, 2], "data": [0.0] * (2 * batch)}
        return web.json_response({"model_name": name, "model_version": "1", "outputs": [out]})

    app = web.Application()
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", live)
    app.router.add_get("/v2/models/{model}", model_meta)
    app.router.add_get("/v2/models/{model}/ready", model_ready)
    app.router.add_get("/v2/models/{model}/config", model_config)
    app.router.add_post("/v2/models/{model}/infer", infer)
    return app


def main(argv: list[str] | None = None) -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", default="fixed:0")
    parser.add_argument("--models", default="synthetic")
    parser.add_argument("--seq", type=int, default=SEQ_ANY)
    parser.add_argument("--stall-after", type=float, default=None)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--error-every", type=int, default=0, help="answer HTTP 500 to every Nth request")
    args = parser.parse_args(argv)
    app = build_app(args.models.split(","), DelaySpec.parse(args.delay), args.seq, args.stall_after, args.stall_ms,
                    error_every=args.error_every)

    async def ready(_app: web.Application) -> None:
        print("ready", flush=True)

    app.on_startup.append(ready)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


class InjectedLatencyServer:
    """Runs the test server as a child process on ``port``; stops it by PID (context manager)."""

    def __init__(self, port: int, delay: str = "fixed:0", models: tuple[str, ...] = ("synthetic",), seq: int = SEQ_ANY,
                 stall_after_s: float | None = None, stall_ms: float = 0.0, error_every: int = 0) -> None:
        self.port = port
        self.args = [sys.executable, "-m", "icd.load.testserver", "--port", str(port), "--delay", delay,
                     "--models", ",".join(models), "--seq", str(seq)]
        if error_every:
            self.args += ["--error-every", str(error_every)]
        if stall_after_s is not None:
            self.args += ["--stall-after", str(stall_after_s), "--stall-ms", str(stall_ms)]
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> InjectedLatencyServer:
        """Start the child and wait (at most ``timeout_s``: a loaded machine imports slowly) for its ``ready``."""
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env={**os.environ})
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if readable else ""
        if "ready" not in line:
            self.stop()
            raise UserError(f"test server on port {self.port} did not start within {timeout_s:g} s")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> InjectedLatencyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    main()
