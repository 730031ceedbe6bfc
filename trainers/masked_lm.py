"""Pretrain a BERT-style masked language model on the same corpus and tokenizer as a causal LM.

    tfllm train --config configs/bert-tiny.yaml

Tokens are masked dynamically inside tf.data (`data.mask_rate`, 80% mask / 10% random / 10%
kept), so every pass over the corpus masks different tokens; the loss and the reported accuracy
count masked positions only.
"""

from tfllm.data.masking import masked_lm_dataset
from tfllm.trainers import causal_lm


def train(config, run_dir):
    """Train the masked LM of `config` into `run_dir`; returns the trained model and tokenizer."""
    d = config.data
    return causal_lm.train(
        config, run_dir, dataset_fn=masked_lm_dataset, mask_rate=d.mask_rate, whole_word=d.whole_word_masking
    )
