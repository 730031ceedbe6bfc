"""Pretrain a BERT-style masked language model on the same corpus and tokenizer as a causal LM.

    tfllm train --config configs/bert-tiny.yaml

Tokens are masked dynamically inside tf.data (`data.mask_rate`, 80% mask / 10% random / 10%
kept), so every pass over the corpus masks different tokens; the loss and the reported accuracy
count masked positions only.
"""

from tfllm import runs
from tfllm.data.masking import masked_lm_dataset
from trainers import init_from
from trainers.causal_lm import make_datasets
from trainers.common import compile_model, fit, prepare_data, save_config, start_session


def train(config, run_dir):
    """Train the masked LM of `config` into `run_dir`; returns the trained model and tokenizer."""
    session = start_session(config, run_dir)
    pretrained = init_from.check(config)
    if pretrained:
        init_from.copy_tokenizer(config, session.paths)
    stats, tokenizer = prepare_data(config, session.paths)
    save_config(session)
    d = config.data
    train_at, val_ds, val_batches = make_datasets(
        config, stats, tokenizer, session.strategy, dataset_fn=masked_lm_dataset,
        mask_rate=d.mask_rate, whole_word=d.whole_word_masking,
    )
    with session.strategy.scope():
        model = runs.build_model(config, tokenizer.vocabulary_size)
        if pretrained:
            init_from.load_backbone(model, config)
        compile_model(session, model)
    fit(session, model, train_at, val_ds, val_batches, tokenizer.vocabulary_size)
    return model, tokenizer
