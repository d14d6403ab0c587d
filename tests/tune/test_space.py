from __future__ import annotations

import pytest

from icd.errors import ConfigError
from icd.tune.space import Candidate, SearchSpace, build_space, parse_preferred_option


def test_enumeration_collapses_unbatched_and_skips_impossible():
    space = SearchSpace(instance_counts=[2, 1, 2], threads=[1], max_batch_sizes=[8, 1, 4],
                        preferred_batch_sizes=[[], [8], "max"], queue_delays_us=[0, 500])
    enum = space.enumerate()
    ids = [c.config_id for c in enum.candidates]
    assert space.instance_counts == [1, 2] and space.max_batch_sizes == [1, 4, 8]  # sorted, unique
    assert len(ids) == len(set(ids))
    assert "i1_t1_b1" in ids and not any(i.startswith("i1_t1_b1_") for i in ids)  # delays / preferred moot
    assert "i1_t1_b4_p4_d500" in ids and "i1_t1_b8_p8_d0" in ids  # "max" resolves per candidate
    assert enum.skipped == {"preferred_batch_size [8] > max_batch_size 4": 4}
    assert enum.skipped_lines() == ["4 x preferred_batch_size [8] > max_batch_size 4"]


def test_space_with_no_possible_configuration_names_the_fields():
    space = SearchSpace(max_batch_sizes=[4, 8], preferred_batch_sizes=[[16]])
    with pytest.raises(ConfigError, match=r"no possible configuration.*preferred_batch_size \[16\] > max_batch_size"):
        space.enumerate()


@pytest.mark.parametrize(("overrides", "field_name"), [
    ({"instance_counts": [0, 1]}, "instance_counts"),
    ({"threads": [-1]}, "threads"),
    ({"max_batch_sizes": []}, "max_batch_sizes"),
    ({"preferred_batch_sizes": [[0]]}, "preferred_batch_sizes"),
    ({"concurrency": ["many"]}, "concurrency"),
    ({"instance_count": [1]}, "instance_count"),  # unknown field
])
def test_bad_space_values_are_config_errors_naming_the_field(overrides, field_name):
    with pytest.raises(ConfigError, match=field_name):
        build_space(None, overrides)


def test_space_file_and_flags(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("instance_counts: [1, 3]\npreferred_batch_sizes: [[], max, [2, 4]]\n")
    space = build_space(path, {"threads": [2], "instance_counts": None})
    assert space.instance_counts == [1, 3] and space.threads == [2]
    assert space.preferred_batch_sizes == [[], "max", [2, 4]]
    path.write_text("max_batch_sizes: eight\n")
    with pytest.raises(ConfigError, match=rf"{path}: max_batch_sizes"):
        build_space(path)
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_space(path)
    with pytest.raises(ConfigError, match="not found"):
        build_space(tmp_path / "missing.yaml")


def test_preferred_tokens():
    assert parse_preferred_option("none") == [] and parse_preferred_option("max") == "max"
    assert parse_preferred_option("4:8") == [4, 8]
    with pytest.raises(ConfigError, match="--preferred-batch-sizes"):
        parse_preferred_option("four")


def test_candidate_round_trip_and_index():
    space = SearchSpace(max_batch_sizes=[1, 8], queue_delays_us=[0, 100])
    candidate = Candidate(2, 1, 8, (), 100)
    assert Candidate.from_dict(candidate.to_dict()) == candidate
    index = space.index_of(candidate)
    assert index is not None and space.at(index)[0] == candidate
    assert space.index_of(Candidate(5, 1, 8)) is None
