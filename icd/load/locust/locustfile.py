"""Locust load on a Triton model with icd's payloads (the KServe v2 JSON bodies ``icd bench`` sends).

Run it on one machine or many (Locust's master / worker mode)::

    locust -f icd/load/locust/locustfile.py --host http://TRITON:8000 --icd-model bert_icd \\
        --headless -u 64 -r 16 -t 5m --master --expect-workers 4      # one master
    locust -f icd/load/locust/locustfile.py --worker --master-host MASTER   # on each load machine

Options (each also an environment variable and a Locust config-file key): ``--icd-model`` (``ICD_LOCUST_MODEL``),
``--icd-input-shape`` tokens per row, ``--icd-batch-size`` rows per request, ``--icd-inputs random|text``,
``--icd-pool-size`` distinct bodies, ``--icd-seed``. Locust sends them from the master to every worker.

The master (or the single node) checks the model before the run starts (live server, model ready, declared
inputs fit the request shape) and exits with code 2 and one line when it does not; the workers receive the checked
inputs with the run's options, so the run's clock does not count a check on each machine. Each user is
closed-loop (no wait between requests), like ``icd bench``'s closed loop. Bodies are built by
:mod:`icd.load.inputs` (random ids or real tokenized text).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys

from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from icd.errors import UserError
from icd.load.inputs import check_shapes, infer_body, named_arrays, token_batches
from icd.load.settings import InputSource, LoadSettings
from icd.load.target import ModelInfo, Target, TensorSpec, check_target

log = logging.getLogger("icd.locust")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per metadata request otherwise
EXIT_BAD_TARGET = 2
_STATE: dict[str, object] = {"bodies": [], "ok": 0, "failed": 0}


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("icd", "icd's Triton payloads")
    group.add_argument("--icd-model", default="bert_icd", env_var="ICD_LOCUST_MODEL", help="Triton model name")
    group.add_argument("--icd-input-shape", type=int, default=128, env_var="ICD_LOCUST_INPUT_SHAPE",
                       help="tokens per request row")
    group.add_argument("--icd-batch-size", type=int, default=1, env_var="ICD_LOCUST_BATCH_SIZE", help="rows per request")
    group.add_argument("--icd-inputs", choices=[s.value for s in InputSource], default=InputSource.RANDOM.value,
                       env_var="ICD_LOCUST_INPUTS", help="random token ids or real tokenized text")
    group.add_argument("--icd-pool-size", type=int, default=64, env_var="ICD_LOCUST_POOL_SIZE",
                       help="distinct request bodies cycled through")
    group.add_argument("--icd-seed", type=int, default=0, env_var="ICD_LOCUST_SEED", help="seed of the bodies")


def _settings(options) -> LoadSettings:
    return LoadSettings(duration_s=1.0, input_shape=options.icd_input_shape, batch_size=options.icd_batch_size,
                        inputs=options.icd_inputs, pool_size=options.icd_pool_size, seed=options.icd_seed, workers=0)


def _check_target(environment) -> ModelInfo:
    """The model's declared inputs; UserError / ValueError when the target does not fit the options."""
    options = environment.parsed_options
    if not environment.host:
        raise UserError("no --host: give the Triton HTTP endpoint, e.g. --host http://127.0.0.1:8000")
    settings = _settings(options)
    info = check_target(Target(environment.host.rstrip("/"), (options.icd_model,)), settings.protocol)[options.icd_model]
    check_shapes(info, settings)
    return info


@events.init.add_listener
def _on_init(environment, runner=None, **_kwargs) -> None:
    """Master / single node: check the target before the run starts; the workers get the model's inputs from it."""
    if isinstance(runner, WorkerRunner) or environment.parsed_options is None:
        return  # a worker gets the options (and the checked inputs) with the master's spawn message
    try:
        info = _check_target(environment)
    except (UserError, ValueError) as exc:
        log.error("icd: %s", exc)
        sys.exit(EXIT_BAD_TARGET)
    environment.parsed_options.icd_model_inputs = json.dumps(
        {"name": info.name, "max_batch_size": info.max_batch_size,
         "inputs": [[t.name, t.datatype, list(t.shape)] for t in info.inputs]})


def _model_info(options) -> ModelInfo:
    doc = json.loads(options.icd_model_inputs)
    inputs = tuple(TensorSpec(name, datatype, tuple(shape)) for name, datatype, shape in doc["inputs"])
    return ModelInfo(doc["name"], inputs, (), doc["max_batch_size"])


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    """Every node: build this node's request bodies from the inputs the master checked (no request to Triton)."""
    options = environment.parsed_options
    info = _model_info(options)
    _STATE["bodies"] = [infer_body(named_arrays(info, batch)) for batch in token_batches(_settings(options))]
    _STATE["ok"], _STATE["failed"] = 0, 0


@events.request.add_listener
def _count(exception=None, **_kwargs) -> None:
    _STATE["failed" if exception else "ok"] += 1  # type: ignore[operator]


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    if _STATE["ok"] or _STATE["failed"]:
        log.info("icd: this node sent %s ok / %s failed requests", _STATE["ok"], _STATE["failed"])


class TritonUser(FastHttpUser):
    """One closed-loop client posting icd's bodies to ``/v2/models/<model>/infer``."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.model = self.environment.parsed_options.icd_model
        self.path = f"/v2/models/{self.model}/infer"
        bodies = _STATE["bodies"]
        if not bodies:  # the target check failed: the runner is quitting
            raise StopUser
        self.bodies = itertools.cycle(bodies)  # type: ignore[arg-type]

    @task
    def infer(self) -> None:
        self.client.post(self.path, data=next(self.bodies), headers={"Content-Type": "application/json"},
                         name=self.path)
