"""A synthetic KServe-v2 HTTP upstream for router tests (NOT Triton): models with a configured delay and error rate.

Run: ``python -m tests.rollout.kserve_stub --port P --model name:delay_ms:error_rate[:perturb] [--model ...]``.
Each infer returns ``{"model_name": name, "outputs": [{"name": "OUT", "data": [...]}]}`` echoing the input data;
with ``perturb`` p > 0 the output is ``data + p · reversed(data)`` (a synthetic "candidate that answers
differently", for shadow-traffic tests).
"""

from __future__ import annotations

import argparse
import asyncio
import random

from aiohttp import web


def build_app(models: dict[str, tuple[float, ...]], seed: int = 0, output_name: str = "OUT") -> web.Application:
    rng = random.Random(seed)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def meta(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in models:
            return web.json_response({"error": f"unknown model {name}"}, status=404)
        return web.json_response({"name": name, "versions": ["1"], "platform": "synthetic",
                                  "inputs": [{"name": "IN", "datatype": "FP32", "shape": [-1, 4]}],
                                  "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [-1, 4]}]})

    async def infer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in models:
            return web.json_response({"error": f"unknown model {name}"}, status=404)
        delay_ms, error_rate, perturb = (*models[name], 0.0)[:3]
        body = await request.json()
        await asyncio.sleep(delay_ms / 1e3)
        if rng.random() < error_rate:
            return web.json_response({"error": "injected failure"}, status=500)
        data = body["inputs"][0]["data"]
        if perturb:
            data = [x + perturb * y for x, y in zip(data, reversed(data), strict=True)]
        return web.json_response({"model_name": name, "outputs": [{"name": output_name, "datatype": "FP32",
                                                                   "shape": [1, len(data)], "data": data}]})

    app = web.Application()
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/health/live", ready)
    app.router.add_get("/v2/models/{name}", meta)
    app.router.add_get("/v2/models/{name}/ready", meta)
    app.router.add_post("/v2/models/{name}/infer", infer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", action="append", required=True, help="name:delay_ms:error_rate[:perturb]")
    args = parser.parse_args()
    models = {}
    for item in args.model:
        name, *numbers = item.split(":")
        models[name] = tuple(float(x) for x in numbers)
    web.run_app(build_app(models), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
