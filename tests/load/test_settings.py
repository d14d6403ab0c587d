from __future__ import annotations

import pytest

from icd.errors import UserError
from icd.load import LoadMode, LoadSettings, Protocol, Target


def test_mode_follows_rate():
    assert LoadSettings().mode == LoadMode.CLOSED
    assert LoadSettings(rate=5).mode == LoadMode.OPEN


@pytest.mark.parametrize(("field", "value"), [("duration_s", 0), ("concurrency", 0), ("rate", -1), ("input_shape", 0),
                                              ("batch_size", 0), ("workers", -1)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LoadSettings(**{field: value})


def test_bad_enum():
    with pytest.raises(ValueError):
        LoadSettings(arrival="sometimes")


def test_target_parsing():
    assert Target("http://localhost:8000", ["m"]).host_port(Protocol.HTTP) == ("localhost", 8000)
    assert Target("localhost:9001", ["m"]).grpc_address() == "localhost:9001"
    assert Target("grpc://127.0.0.1", ["m"]).host_port(Protocol.GRPC) == ("127.0.0.1", 8001)
    with pytest.raises(UserError, match="path"):
        Target("http://localhost:8000/v2", ["m"]).http_base()
    with pytest.raises(UserError, match="no model"):
        Target("http://localhost:8000", [])
