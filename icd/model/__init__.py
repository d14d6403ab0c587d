"""Model loading (offline Hugging Face BERT checkpoints or BertConfig shapes) and the serving wrapper."""
