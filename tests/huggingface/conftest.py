"""Tiny randomly initialised checkpoints written by `transformers` itself (PyTorch, CPU, no
network), one per family and layout, shared by the session."""

import importlib
import importlib.util

import pytest


class ImportedOnUse:
    """The module `name`, imported at its first attribute access. Every worker process of the
    suite collects these files, and importing PyTorch costs each 3.6 s of CPU; only the worker
    that runs them needs it."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


for _name in ("transformers", "torch"):
    if importlib.util.find_spec(_name) is None:
        pytest.importorskip(_name)  # skips these files, as when they imported it here
transformers, torch = ImportedOnUse("transformers"), ImportedOnUse("torch")

VOCAB = 96
# initializer_range 0.3 rather than 0.02: logits of order 1, so that a wrong norm, scale or
# head layout shows far above the 1e-4 tolerance.
CHECKPOINTS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500000.0, tie_word_embeddings=False,
        initializer_range=0.3)),
    # Llama 3.1's rotary scaling: wavelengths beyond 16 / 1 positions stretched 8 times, below
    # 16 / 4 kept, blended between (head_dim 8 has both kinds at theta 500000).
    "llama3": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, initializer_range=0.3,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=16))),
    "llama_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=True, initializer_range=0.3)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=64, sliding_window=None, initializer_range=0.3)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=1e6, tie_word_embeddings=True,
        initializer_range=0.3)),
    "bert": lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, type_vocab_size=2, initializer_range=0.3)),
}
CAUSAL = sorted(name for name in CHECKPOINTS if name != "bert")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> (directory, the `transformers` model in eval mode)."""
    root = tmp_path_factory.mktemp("hf")
    made = {}
    for name, make in CHECKPOINTS.items():
        torch.manual_seed(0)
        model = make().eval()
        # Biases start at 0 and norm scales at 1: moved, so that a misplaced one shows.
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.ndim == 1:
                    parameter.add_(0.3 * torch.randn_like(parameter))
        model.save_pretrained(root / name)
        made[name] = (str(root / name), model)
    return made


@pytest.fixture(scope="session")
def gpt2_checkpoint(tmp_path_factory):
    """(directory, model, tokenizer): a tiny GPT-2 with a byte-level BPE trained by `tokenizers`
    on the built-in corpus, both saved by `transformers` (vocab.json, merges.txt, tokenizer.json,
    tokenizer_config.json, special_tokens_map.json)."""
    import tokenizers
    from pydoc_data.topics import topics

    directory = tmp_path_factory.mktemp("hf") / "gpt2_with_tokenizer"
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's own pattern
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(topics.values()), trainer)
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                               bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory), model, tokenizer


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory):
    """(directory, model, tokenizer): a tiny BERT masked LM with an uncased WordPiece trained by
    `tokenizers` on the built-in corpus, both saved by `transformers`."""
    import tokenizers
    from pydoc_data.topics import topics

    directory = tmp_path_factory.mktemp("hf") / "bert_with_tokenizer"
    wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(list(topics.values()), vocab_size=500, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = transformers.BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=True)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, type_vocab_size=2, initializer_range=0.3)).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory), model, tokenizer
