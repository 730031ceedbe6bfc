"""Corpus reading, cleaning, splitting and the tf.data language-model pipeline."""

from tfllm.data.builtin import BUILTIN_CORPORA
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.corpus_stats import CorpusStats
from tfllm.data.document import Document
from tfllm.data.pipeline import count_tokens, lm_dataset
from tfllm.data.readers import iter_documents
