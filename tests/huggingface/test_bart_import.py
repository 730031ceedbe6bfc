"""BART checkpoints (`BartForConditionalGeneration`) as tfllm `Seq2SeqLM`s: the logits of
`transformers`, padded sources, cached decoding, untied tables, `tfllm import` into a seq2seq
run, `tfllm export` back, and one-line refusals of what tfllm cannot represent yet."""

import json
import os
import shutil

import numpy as np
import pytest
from pydoc_data.topics import topics

from tests.huggingface.conftest import torch, transformers
from tfllm import cli
from tfllm.data.seq2seq_pipeline import decoder_start_id
from tfllm.errors import UserError
from tfllm.generator import Generator
from tfllm.huggingface import load_model, save_pretrained
from tfllm.models.seq2seq_lm import Seq2SeqLM
from tfllm.run import Run
from tfllm.samplers import GreedySampler

BOS, PAD, EOS = 0, 1, 2  # BART's <s>, <pad>, </s>; its decoder starts from </s>
SOURCES = ["The with statement", "def f(x):\n    return x", "  two  spaces"]


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    """(directory, model, tokenizer): a tiny BART with a byte-level BPE trained by `tokenizers` on
    the built-in corpus, saved as facebook/bart-* ship theirs: config.json, model.safetensors and
    tokenizer.json, without tokenizer_config.json."""
    import tokenizers

    directory = tmp_path_factory.mktemp("hf") / "bart"
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(topics.values()), trainer)
    bpe.post_processor = tokenizers.processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS))
    tokenizer = transformers.BartTokenizer(tokenizer_object=bpe)
    torch.manual_seed(0)
    # init_std 0.3 rather than 0.02: logits of order 1, so that a wrong norm, offset or head
    # layout shows far above the 1e-4 tolerance.
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        scale_embedding=False, init_std=0.3, dropout=0.0)).eval()
    with torch.no_grad():  # biases start at 0 and norm scales at 1: moved, so that a misplaced one shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    os.remove(directory / "tokenizer_config.json")
    return str(directory), model, tokenizer


@pytest.fixture(scope="module")
def imported(bart):
    return load_model(bart[0])


def batch(vocabulary_size):
    """Sources of 9 and 5 tokens, targets of 6 and 4 (right-padded), as int32 arrays."""
    rng = np.random.default_rng(0)
    source = rng.integers(5, vocabulary_size, (2, 9)).astype("int32")
    source_mask = np.ones((2, 9), "int32")
    source_mask[1, 5:] = 0
    source[1, 5:] = PAD
    target = rng.integers(5, vocabulary_size, (2, 6)).astype("int32")
    target[:, 0] = EOS
    target_mask = np.ones((2, 6), "int32")
    target_mask[1, 4:] = 0
    target[1, 4:] = PAD
    return source, source_mask, target, target_mask


def transformers_logits(model, source, source_mask, target, target_mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(source, dtype=torch.long), attention_mask=torch.tensor(source_mask),
                     decoder_input_ids=torch.tensor(target, dtype=torch.long),
                     decoder_attention_mask=torch.tensor(target_mask)).logits.numpy()


def test_logits_equal_transformers_with_a_padded_source(bart, imported):
    _, model, _ = bart
    source, source_mask, target, target_mask = batch(model.config.vocab_size)
    want = transformers_logits(model, source, source_mask, target, target_mask)
    got = np.asarray(imported({"encoder_token_ids": source, "encoder_padding_mask": source_mask,
                               "decoder_token_ids": target, "decoder_padding_mask": target_mask}))
    assert isinstance(imported, Seq2SeqLM) and want.std() > 0.5
    real = target_mask.astype(bool)  # padded targets' logits are nobody's
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
    # The padding of row 1 is masked, not attended: its logits are those of the source alone.
    alone = transformers_logits(model, source[1:, :5], source_mask[1:, :5], target[1:], target_mask[1:])
    np.testing.assert_allclose(got[1, :4], alone[0, :4], atol=1e-4, rtol=0)


def test_cached_decoding_equals_transformers_step_by_step(bart, imported):
    _, model, _ = bart
    source, source_mask, target, _ = batch(model.config.vocab_size)
    target_mask = np.ones_like(target)
    # transformers' logits of a whole target are those of its own cached decoding, position by position.
    want = transformers_logits(model, source, source_mask, target, target_mask)
    cache = imported.build_cache(2, 8, source, source_mask)
    for index in range(target.shape[1]):
        logits, _, cache = imported.call_with_cache(target[:, index: index + 1], cache, index)
        np.testing.assert_allclose(np.asarray(logits)[:, 0], want[:, index], atol=1e-4, rtol=0)


def test_a_bart_model_checkpoint_without_the_model_prefix_imports_alike(bart, imported, tmp_path):
    """facebook/bart-* declare architectures ["BartModel"]: tensors named without "model."."""
    from safetensors.numpy import load_file, save_file

    directory = tmp_path / "bart_model"
    shutil.copytree(bart[0], directory)
    path = directory / "model.safetensors"
    tensors = {name.removeprefix("model."): value for name, value in load_file(path).items()
               if name != "final_logits_bias"}
    save_file(tensors, path, metadata={"format": "pt"})
    lm = load_model(str(directory))
    for variable, want in zip(lm.weights, imported.weights):
        np.testing.assert_array_equal(np.asarray(variable), np.asarray(want), err_msg=variable.path)


def edited_copy(directory, destination, config=None, tensors=None):
    """A copy of the checkpoint `directory` with config.json keys and tensors replaced."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(directory, destination)
    if config:
        with open(os.path.join(directory, "config.json")) as f:
            edited = {**json.load(f), **config}
        with open(os.path.join(destination, "config.json"), "w") as f:
            json.dump(edited, f)
    if tensors:
        path = os.path.join(destination, "model.safetensors")
        save_file({**load_file(path), **tensors}, path, metadata={"format": "pt"})
    return str(destination)


@pytest.mark.parametrize("config, named", [
    ({"scale_embedding": True}, "config.json: scale_embedding=true"),
    ({"activation_function": "swish"}, "config.json: activation_function='swish'"),
    ({"decoder_attention_heads": 4}, "config.json: encoder_attention_heads=2 but decoder_attention_heads=4"),
    ({"decoder_ffn_dim": 48}, "config.json: encoder_ffn_dim=32 but decoder_ffn_dim=48"),
])
def test_configs_tfllm_cannot_build_are_refused_in_one_line(bart, tmp_path, config, named):
    directory = edited_copy(bart[0], tmp_path / "edited", config=config)
    with pytest.raises(UserError) as error:
        load_model(directory)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_nonzero_final_logits_bias_is_refused_naming_file_and_tensor(bart, tmp_path):
    _, model, _ = bart
    bias = np.full((1, model.config.vocab_size), 0.5, "float32")
    directory = edited_copy(bart[0], tmp_path / "biased", tensors={"final_logits_bias": bias})
    with pytest.raises(UserError) as error:
        load_model(directory)
    message = str(error.value)
    assert message.startswith(os.path.join(directory, "model.safetensors") + ": tensor 'final_logits_bias' is not zero")
    assert "\n" not in message


def test_an_untied_bart_with_gelu_new_imports_exports_and_is_refused_when_its_tables_differ(tmp_path):
    """Untied, transformers 5 gives the encoder, the decoder and the head a table each; tfllm's
    one token embedding holds them when the encoder's and decoder's are equal."""
    from safetensors.numpy import load_file

    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16,
        init_std=0.3, tie_word_embeddings=False, activation_function="gelu_new")).eval()
    with torch.no_grad():
        model.model.encoder.embed_tokens.weight.copy_(model.model.shared.weight)
        model.model.decoder.embed_tokens.weight.copy_(model.model.shared.weight)
    model.save_pretrained(tmp_path / "untied")
    arrays = (np.array([[5, 6, 7, 2]], "int32"), np.ones((1, 4), "int32"), np.array([[2, 8, 9]], "int32"),
              np.ones((1, 3), "int32"))
    lm = load_model(str(tmp_path / "untied"))
    assert (lm.backbone.tie_embeddings, lm.backbone.mlp) == (False, "gelu_tanh")
    got = lm(dict(zip(["encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"],
                      arrays)))
    np.testing.assert_allclose(np.asarray(got), transformers_logits(model, *arrays), atol=1e-4, rtol=0)

    save_pretrained(lm, str(tmp_path / "exported"))
    reloaded = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "exported").eval()
    np.testing.assert_allclose(transformers_logits(reloaded, *arrays), transformers_logits(model, *arrays),
                               atol=1e-4, rtol=0)

    table = load_file(tmp_path / "untied" / "model.safetensors")["model.shared.weight"]
    directory = edited_copy(tmp_path / "untied", tmp_path / "apart",
                            tensors={"model.decoder.embed_tokens.weight": table + 1})
    with pytest.raises(UserError, match="'model.decoder.embed_tokens.weight' differs from model.shared.weight"):
        load_model(directory)


@pytest.fixture(scope="module")
def run_dir(bart, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("imported") / "bart")
    assert cli.main(["import", bart[0], "--run-dir", run_dir]) == 0
    return run_dir


def test_tfllm_import_writes_a_seq2seq_run_with_bart_s_tokenizer(bart, run_dir):
    _, model, reference = bart
    run = Run.open(run_dir)
    m = run.config.model
    assert (m.task, m.norm_position, m.mlp, m.position, run.config.data.tokenizer) == (
        "seq2seq", "post", "gelu", "learned", "gpt2_bpe")
    assert (run.config.num_encoder_layers, run.config.num_decoder_layers, m.num_heads, m.hidden_dim,
            m.intermediate_dim, run.config.source_len, run.config.max_seq_len) == (2, 2, 2, 16, 32, 64, 64)
    tokenizer = run.tokenizer
    assert (tokenizer.eos_id, tokenizer.start_id, decoder_start_id(tokenizer)) == (EOS, None, EOS)
    assert run.config.data.vocab_size == model.config.vocab_size
    # GPT-2's byte-level BPE is tested at length in test_import_checkpoint.py; here, BART's ids.
    lines = SOURCES + list(topics.values())[0].split("\n")[:20] + ["a  b\tc ", "日本語 🎉", ""]
    assert tokenizer.tokenize(lines).to_list() == [reference(line, add_special_tokens=False)["input_ids"]
                                                   for line in lines]


def test_an_imported_run_generates_the_ids_of_transformers(bart, run_dir):
    _, model, reference = bart
    run = Run.open(run_dir)
    lm, _ = run.load_model()
    got = Generator(lm, run.tokenizer, run.config.max_seq_len).generate_ids(SOURCES, 8, GreedySampler())
    want = []
    for source in SOURCES:
        # tfllm's encoder reads a source and </s> (BART's tokenizer also puts <s> in front).
        ids = torch.tensor([reference(source, add_special_tokens=False)["input_ids"] + [EOS]])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=8, decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                                 forced_bos_token_id=None, forced_eos_token_id=None)[0, 1:].tolist()
        want.append(out[: out.index(EOS)] if EOS in out else out)
    assert [list(row) for row in got] == want and any(want)


def test_tfllm_export_writes_a_bart_checkpoint_transformers_loads_with_the_same_logits(bart, run_dir, tmp_path):
    _, model, reference = bart
    out = str(tmp_path / "hf")
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--format", "huggingface"]) == 0
    reloaded = transformers.BartForConditionalGeneration.from_pretrained(out).eval()
    assert (reloaded.config.decoder_start_token_id, reloaded.config.forced_eos_token_id) == (EOS, EOS)
    arrays = batch(model.config.vocab_size)
    real = arrays[3].astype(bool)
    np.testing.assert_allclose(transformers_logits(reloaded, *arrays)[real], transformers_logits(model, *arrays)[real],
                               atol=1e-4, rtol=0)
    # The text's ids; the tokenizer written is GPT-2's class, which puts no <s> and </s> around them.
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert [tokenizer(s, add_special_tokens=False)["input_ids"] for s in SOURCES] == [
        reference(s, add_special_tokens=False)["input_ids"] for s in SOURCES]
