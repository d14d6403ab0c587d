"""The thread budget: threads per instance × instances ≤ cores, and thread settings that are not numbers."""

from __future__ import annotations

import pytest

from icd.errors import ConfigError
from icd.runtimes.threads import repository_budget, repository_instances, thread_budget
from icd.serve.backend.icd_runtime import THREADS_ENV, ThreadsError, instance_threads, parse_threads
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model


@pytest.mark.parametrize("instances, cores, threads", [
    ({"a": 1}, 2, 2), ({"a": 1, "b": 1}, 2, 1), ({"a": 2, "b": 1}, 2, 1), ({"a": 1, "b": 1}, 16, 8),
    ({"a": 3}, 16, 5), ({}, 4, 4),
])
def test_budget_fits_the_cores(instances, cores, threads):
    budget = thread_budget(instances, cores)
    assert budget.threads == threads
    assert budget.threads * max(1, sum(instances.values())) <= cores or budget.threads == 1


def test_repository_instances_read_every_config(tmp_path):
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="one", instance_count=1))
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="two", instance_count=2))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("not a config")
    assert repository_instances(tmp_path) == {"one": 1, "two": 2}
    budget = repository_budget(tmp_path, env={})
    assert "3 model instances" in budget.describe()


def test_user_override_wins_and_a_bad_one_is_a_config_error(tmp_path):
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="one"))
    assert repository_budget(tmp_path, env={THREADS_ENV: "3"}).threads == 3
    with pytest.raises(ConfigError, match=f"{THREADS_ENV}='lots'"):
        repository_budget(tmp_path, env={THREADS_ENV: "lots"})


def test_instance_threads_order_parameter_then_budget_then_cores():
    assert instance_threads({"icd_threads": "3"}, {THREADS_ENV: "1"}) == (3, "parameter icd_threads")
    assert instance_threads({"icd_threads": "0"}, {THREADS_ENV: "1"}) == (1, f"${THREADS_ENV}")
    assert instance_threads({"icd_torch_threads": "2"}, {}) == (2, "parameter icd_torch_threads")
    assert instance_threads({}, {})[0] >= 1


@pytest.mark.parametrize("text", ["two", "1.5", "-1", ""])
def test_non_integer_threads_name_the_parameter(text):
    with pytest.raises(ThreadsError, match=r"icd_torch_threads=.*whole number"):
        instance_threads({"icd_torch_threads": text}, {})
    with pytest.raises(ThreadsError, match="icd_threads="):
        parse_threads(text, "icd_threads")
