import pytest

from tfllm import precision
from tfllm.errors import UserError


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16"])
def test_explicit_precisions_that_run_everywhere_pass_through(name):
    assert precision.resolve_precision(name) == name


def test_float16_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="train.precision=mixed_float16 needs a GPU"):
        precision.resolve_precision("mixed_float16")


@pytest.mark.parametrize("has_bf16, expected", [(True, "mixed_bfloat16"), (False, "float32")])
def test_auto_on_a_cpu_follows_its_bf16_instructions(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
    assert precision.resolve_precision("auto") == expected


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("flags : fpu sse avx2 avx512f avx512_bf16 amx_tile", True),
        ("flags : fpu sse avx2 amx_bf16", True),
        ("flags : fpu sse avx2 avx512f avx512_vnni", False),
    ],
)
def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\n{flags}\n")
    assert precision.cpu_has_bf16(str(cpuinfo)) is expected


def test_no_cpuinfo_means_no_bf16(tmp_path):
    assert precision.cpu_has_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    "capability, expected",
    [((7, 0), "mixed_float16"), ((7, 5), "mixed_float16"), ((8, 0), "mixed_bfloat16"), ((9, 0), "mixed_bfloat16")],
)
def test_gpus_before_ampere_get_float16_with_loss_scaling(capability, expected):
    assert precision.gpu_precision(capability) == expected


def small_lm():
    import numpy as np
    from tfllm.models import CausalLM, GPTBackbone

    backbone = GPTBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                           max_sequence_length=16)
    ids = np.random.default_rng(0).integers(1, 64, (2, 10)).astype("int32")
    return CausalLM(backbone), {"token_ids": ids, "padding_mask": np.ones_like(ids)}


@pytest.mark.parametrize("name, tolerance", [("bfloat16", 0.05), ("int8", 0.02)])
def test_decoding_precisions_round_the_weights_and_keep_the_logits_close(name, tolerance):
    import numpy as np
    import tensorflow as tf

    model, inputs = small_lm()
    full = model(inputs).numpy()
    converted = precision.for_decoding(model, name)
    logits = converted(inputs).numpy()
    assert logits.dtype == np.float32
    error = np.abs(logits - full).max()
    # Rounded, so not equal, but close: the mutation "skip the conversion" fails the first check.
    assert 0 < error < tolerance * np.abs(full).max()
    if name == "bfloat16":
        assert {w.dtype for w in converted.weights} == {"bfloat16"}
    else:
        assert any(w.dtype == "int8" for w in converted.weights)
    # Cached decoding in that precision equals its own full pass.
    cache = converted.build_cache(2, 16)
    step_logits, _, cache = converted.call_with_cache(inputs["token_ids"][:, :6], cache, 0)
    step = tf.function(converted.call_with_cache)
    for index in range(6, 10):
        step_logits, _, cache = step(inputs["token_ids"][:, index: index + 1], cache, tf.constant(index))
        np.testing.assert_allclose(step_logits.numpy()[:, 0], logits[:, index], atol=0.02 * np.abs(full).max())


def test_float32_decoding_is_the_model_itself_and_unknown_precisions_are_refused():
    model, _ = small_lm()
    assert precision.for_decoding(model, "float32") is model
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.for_decoding(model, "float16")


def test_the_command_line_offers_the_library_precisions():
    from tfllm import cli

    assert cli.DECODING_PRECISIONS == precision.DECODING_PRECISIONS
