"""KIND_GPU instances (python backend moves model.pt to cuda:<device id>): only where a CUDA GPU exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icd.export.options import ExportOptions, Target
from icd.export.repository import export_model
from tests.serve.helpers import infer_grpc, infer_http, references, tokenize

pytestmark = [pytest.mark.gpu, pytest.mark.e2e,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_gpu_instances_serve_like_the_model_on_the_gpu(tmp_path, identity_run_dir, triton_server, minilm_tokenizer,
                                                       corpus_split):
    repo = tmp_path / "models"
    export_model(identity_run_dir, repo, ExportOptions(model_name="bert_icd", target=Target.GPU, gpus=(0,)))
    server = triton_server(repo, timeout_s=300, env={"TRITON_ICD_PROFILE": "true"})
    ids, mask = tokenize(minilm_tokenizer, corpus_split.heldout[:4])
    model = references(identity_run_dir)["bert_icd"].cuda()
    with torch.no_grad():
        expected = model(torch.from_numpy(ids).cuda(), torch.from_numpy(mask).cuda()).cpu().numpy()
    np.testing.assert_allclose(infer_http(server.http_url, "bert_icd", ids, mask), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(infer_grpc(server.grpc_url, "bert_icd", ids, mask), expected, atol=1e-5, rtol=0)
    assert '"device":"cuda:0"' in server.log_text(), "the instance ran on the GPU"
