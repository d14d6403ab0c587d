from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.errors import UserError
from icd.rollout.router_config import RouterSpec, render_nginx_conf, split_lines
from icd.rollout.weights import canary_weights, next_canary_weight, normalise, parse_split


def _spec(**kw) -> RouterSpec:
    base = dict(listen_port=18080, public_model="bert", weights={"bert_baseline": 90, "bert_icd": 10},
                upstreams={"blue": ["127.0.0.1:18000"], "green": ["127.0.0.1:18100"]}, active="blue")
    return RouterSpec(**{**base, **kw})


@pytest.mark.binary
def test_rendered_config_rewrites_public_name_and_is_accepted_by_nginx(tmp_path):
    text = render_nginx_conf(_spec(), tmp_path)
    assert "90.00% bert_baseline;" in text and "* bert_icd;" in text
    assert "proxy_pass http://icd_blue/v2/models/$icd_variant$icd_rest" in text
    assert "map $http_x_icd_variant $icd_variant" in text and "map $http_x_icd_client $icd_split_key" in text
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    res = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_zero_weight_variant_gets_no_split_line():
    assert split_lines({"a": 100, "b": 0}) == [("a", "*")]


@pytest.mark.parametrize("field,value,match", [
    ("active", "purple", "active colour"),
    ("weights", {"bert icd": 100}, "model name"),
    ("weights", {"a": -1, "b": 2}, "non-negative"),
    ("upstreams", {"blue": ["nohostport"]}, "host:port"),
    ("listen_port", 0, "listen_port"),
])
def test_invalid_specs_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        _spec(**{field: value}).validate()


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.floats(0, 1000), min_size=1).filter(
    lambda d: sum(d.values()) > 1e-3))
def test_normalised_weights_sum_to_100(weights):
    pct = normalise(weights)
    assert abs(sum(pct.values()) - 100.0) < 1e-6 and all(v >= -1e-9 for v in pct.values())


def test_split_and_canary_arithmetic():
    assert parse_split("50:50") == (50.0, 50.0)
    assert parse_split("3:1") == (75.0, 25.0)
    with pytest.raises(UserError, match="--traffic-split"):
        parse_split("fifty")
    assert canary_weights("p", "c", 10) == {"p": 90.0, "c": 10.0}
    assert next_canary_weight(40, 20, 50) == 50
    with pytest.raises(ValueError):
        next_canary_weight(0, 0, 50)


def _nginx_accepts(text: str, tmp_path) -> None:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    res = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_only_weighted_or_allowed_variants_are_pinnable():
    spec = _spec(weights={"bert_baseline": 100, "bert_icd": 0})
    text = render_nginx_conf(spec, "/tmp/x")
    assert '"bert_baseline" bert_baseline;' in text and '"bert_icd" bert_icd;' not in text
    allowed = render_nginx_conf(_spec(weights={"bert_baseline": 100, "bert_icd": 0}, pinnable=["bert_icd"]), "/tmp/x")
    assert '"bert_icd" bert_icd;' in allowed


def test_match_rules_and_mirror_render_and_nginx_accepts_them(tmp_path):
    from icd.rollout.router_config import MatchRule, MirrorSpec

    spec = _spec(weights={"bert_baseline": 100, "bert_icd": 0},
                 match=[MatchRule("bert_icd", header="X-Canary", value="always"),
                        MatchRule("bert_icd", cookie="canary", value="^(yes|1)$", regex=True)],
                 mirror=MirrorSpec("bert_icd", 0.25, "127.0.0.1:19999"))
    text = render_nginx_conf(spec, tmp_path)
    assert "map $http_x_canary $icd_match0" in text and "default $icd_match1;" in text
    assert 'map $cookie_canary $icd_match1' in text and '"~^(yes|1)$" bert_icd;' in text
    assert "default $icd_weighted;" in text and "mirror /_icd_mirror;" in text and '25.00% "1";' in text
    assert "proxy_set_header X-ICD-Candidate bert_icd;" in text
    _nginx_accepts(text, tmp_path)
    full = render_nginx_conf(_spec(mirror=MirrorSpec("bert_icd", 1.0, "127.0.0.1:19999")), tmp_path)
    assert "icd_mirror_sample" not in full and "mirror /_icd_mirror;" in full
    assert "mirror /_icd_mirror;" not in render_nginx_conf(_spec(mirror=MirrorSpec("bert_icd", 0.0, "h:1")), tmp_path)


@pytest.mark.parametrize("field,value,match", [
    ("mirror", ("bert_icd", 1.5, "127.0.0.1:1"), "mirror.share"),
    ("mirror", ("bert_icd", -0.1, "127.0.0.1:1"), "mirror.share"),
    ("match", [("bert_icd", "X Canary", "", "v")], "match.header"),
    ("match", [("bert_icd", "", "", "v")], "exactly one"),
    ("match", [("bert_icd", "X-Canary", "", 'a"b')], "match.value"),
])
def test_invalid_match_and_mirror_name_the_field(field, value, match):
    from icd.rollout.router_config import MatchRule, MirrorSpec

    made = MirrorSpec(*value) if field == "mirror" else [MatchRule(*v) for v in value]
    with pytest.raises(ValueError, match=match):
        _spec(**{field: made}).validate()


def test_spec_round_trips_through_json():
    from icd.rollout.router_config import MatchRule, MirrorSpec

    spec = _spec(match=[MatchRule("bert_icd", header="X-Canary", value="1")], mirror=MirrorSpec("bert_icd", 0.5, "h:1"),
                 pinnable=["bert_icd"])
    assert RouterSpec.from_dict(spec.to_dict()) == spec
