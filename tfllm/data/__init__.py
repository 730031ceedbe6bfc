"""Corpus reading, cleaning, splitting, the tf.data pipelines and labeled fine-tuning data."""

import importlib

from tfllm.data.builtin import BUILTIN_CORPORA
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.corpus_stats import CorpusStats
from tfllm.data.document import Document
from tfllm.data.labeled import LabelMap, balanced_class_weights, read_classification, read_prompt_completion
from tfllm.data.pipeline import count_tokens, lm_dataset, segment_ids
from tfllm.data.readers import iter_documents

# These modules need the tokenizer package (and so keras_hub); they load on first use, so that
# the rest of the data package loads without it.
_LAZY = {
    "mask_tokens": "tfllm.data.masking",
    "masked_lm_dataset": "tfllm.data.masking",
    "classify_dataset": "tfllm.data.finetune_pipeline",
    "sft_dataset": "tfllm.data.finetune_pipeline",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
