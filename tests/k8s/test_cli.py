"""`icd k8s check|render`: exit codes, messages, nothing half-written."""

from __future__ import annotations

import pytest
import yaml

from icd.errors import UserError
from icd.k8s.render import apply_set, render
from icd.k8s.validate import DEPLOY_DIR
from tests.ops.helpers import run_icd

ISVC = DEPLOY_DIR / "kserve" / "inferenceservice.yaml"


def test_check_passes_on_the_shipped_files_and_fails_on_a_bad_one(capsys, tmp_path):
    done = run_icd(capsys, "k8s", "check")
    assert done.returncode == 0 and "0 problem(s)" in done.stdout
    bad = tmp_path / "hpa.yaml"
    hpa = yaml.safe_load((DEPLOY_DIR / "k8s" / "autoscaling" / "hpa.yaml").read_text())
    hpa["spec"]["maxReplicas"] = "eight"
    bad.write_text(yaml.safe_dump(hpa))
    done = run_icd(capsys, "k8s", "check", str(bad))
    assert done.returncode == 1
    assert f"{bad}: HorizontalPodAutoscaler/icd-triton: spec.maxReplicas: 'eight' is not of type" in done.stdout
    done = run_icd(capsys, "k8s", "check", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "no such file" in done.stderr


def test_render_writes_a_validated_copy(tmp_path, capsys):
    out = tmp_path / "isvc.yaml"
    done = run_icd(capsys, "k8s", "render", str(ISVC), "--out", str(out),
                   "--set", "spec.predictor.model.storageUri=s3://models/icd",
                   "--set", r"metadata.annotations.serving\.kserve\.io/deploymentMode=Standard",
                   "--set", "spec.predictor.minReplicas=3")
    assert done.returncode == 0, done.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/icd"
    assert doc["spec"]["predictor"]["minReplicas"] == 3
    assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_render_with_a_wrong_type_writes_nothing(tmp_path, capsys):
    out = tmp_path / "values.yaml"
    done = run_icd(capsys, "k8s", "render", str(DEPLOY_DIR / "helm" / "triton-values.yaml"), "--out", str(out),
                   "--set", "image.numGpus=one")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "image.numGpus: 'one' is not of type 'integer'; nothing written" in done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_set_paths():
    doc = {"a": {"b": [{"c": 1}]}, "d": 1}
    assert apply_set(doc, "a.b[0].c=2")["a"]["b"][0]["c"] == 2
    assert apply_set(doc, "a.new.key='2'")["a"]["new"] == {"key": "2"}
    assert apply_set(doc, r"a.x\.y=true")["a"]["x.y"] is True
    assert doc == {"a": {"b": [{"c": 1}]}, "d": 1}
    for bad, message in (("a.b[3].c=1", "not an existing list item"), ("d.e=1", "inside a int"),
                         ("novalue", "PATH=VALUE"), ("a=[", "not YAML")):
        with pytest.raises(UserError, match=message):
            apply_set(doc, bad)


def test_render_refuses_multi_document_files(tmp_path):
    source = tmp_path / "two.yaml"
    source.write_text("a: 1\n---\nb: 2\n")
    with pytest.raises(UserError, match="holds 2 documents"):
        render(source, [], tmp_path / "out.yaml")
