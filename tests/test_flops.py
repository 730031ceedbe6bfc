import time

import numpy as np
import pytest
import tensorflow as tf

from tfllm import flops
from tfllm.models.causal_lm import CausalLM
from tfllm.models.gpt_backbone import GPTBackbone

VOCAB, LAYERS, HEADS, HIDDEN, INTERMEDIATE, SEQ = 50, 2, 2, 16, 48, 12


@pytest.fixture(scope="module")
def model():
    backbone = GPTBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE, max_sequence_length=SEQ,
    )
    return CausalLM(backbone)


def per_token():
    return flops.training_flops_per_token(LAYERS, HIDDEN, INTERMEDIATE, VOCAB, SEQ)


def test_six_times_the_matmul_weights_of_a_built_backbone_plus_attention(model):
    backbone = model.backbone
    kernels = [w for w in backbone.weights if w.path.endswith("/kernel")]
    assert len(kernels) == 4 * LAYERS  # qkv, attention output, MLP in, MLP out
    matmul_weights = sum(int(np.prod(w.shape)) for w in kernels)
    matmul_weights += int(np.prod(backbone.token_embedding.embeddings.shape))  # the tied head
    attention = 2 * LAYERS * HIDDEN * SEQ  # q.k over T keys + the weighted sum of T values
    assert per_token() == 6 * matmul_weights + 6 * attention
    assert per_token() == 6 * 5920 + 6 * 768  # by hand: 2 x (768 + 256 + 768 + 768) + 50 x 16


def test_one_third_of_it_is_the_forward_matmul_flops_tensorflow_counts(model):
    forward = tf.function(lambda token_ids: model(token_ids))
    graph = forward.get_concrete_function(tf.TensorSpec((1, SEQ), tf.int32)).graph
    matmuls = {op.name for op in graph.get_operations() if op.type in ("MatMul", "BatchMatMulV2")}
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph, options=options)
    counted = sum(node.total_float_ops for node in profile.children if node.name in matmuls)
    assert counted == per_token() // 3 * SEQ


def test_an_override_wins_and_a_bare_cpu_is_measured():
    assert flops.device_peak_flops(2.5e12) == (2.5e12, "train.peak_flops")
    measured, source = flops.device_peak_flops()
    assert source == "measured CPU matmul"
    assert 1e8 < measured < 1e14
    # Measured once per process: a second run in it reads the same figure.
    assert flops.device_peak_flops() == (measured, source)


@pytest.mark.parametrize(
    "device_name, key",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("Tesla T4", "T4"),
        ("TPU v5litepod-8", "TPU v5 lite"),
        ("TPU v5p-32", "TPU v5p"),
        ("TPU v3-8", "TPU v3"),
    ],
)
def test_accelerators_are_found_in_the_table_longest_name_first(device_name, key):
    assert flops.lookup_peak_flops(device_name) == (flops.PEAK_FLOPS[key], key)


def test_an_unknown_device_has_no_peak():
    assert flops.lookup_peak_flops("Quantum Abacus 9000") == (0.0, None)


@pytest.mark.parametrize("clock", [time.perf_counter, time.process_time])
def test_measured_cpu_flops_is_two_n_cubed_over_the_time(clock):
    measured = flops.measure_cpu_flops(size=64, repeats=3, clock=clock)
    # A 64 x 64 matmul is 524,288 FLOPs; any real CPU does it in between 1 ns and 1 s.
    assert 2 * 64**3 < measured < 2 * 64**3 * 1e9


def test_an_encoder_decoder_counts_its_weights_once_per_token_of_each_side_plus_attention():
    from tfllm.models.seq2seq_backbone import Seq2SeqBackbone

    source_len, encoder_layers = 3 * SEQ, 3
    backbone = Seq2SeqBackbone(vocabulary_size=VOCAB, num_encoder_layers=encoder_layers, num_decoder_layers=LAYERS,
                               num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE,
                               max_source_length=source_len, max_sequence_length=SEQ)
    size = lambda weights: sum(int(np.prod(w.shape)) for w in weights if w.path.endswith("/kernel"))  # noqa: E731
    encoder = size(backbone.encoder.weights)
    cross_key_value = sum(int(np.prod(block.cross_attention.key_value_dense.kernel.shape))
                          for block in backbone.decoder_layers)
    decoder = size(backbone.weights) - encoder - cross_key_value + VOCAB * HIDDEN
    # Per target token: the decoder's weights, the encoder's and the cross keys and values for
    # source_len / seq_len source tokens, and attention: self over SEQ, cross and encoder over the source.
    attention = 2 * HIDDEN * (LAYERS * SEQ + LAYERS * source_len + encoder_layers * source_len * source_len / SEQ)
    expected = 6 * (decoder + (encoder + cross_key_value) * source_len / SEQ) + 6 * attention
    got = flops.seq2seq_training_flops_per_token(encoder_layers, LAYERS, HIDDEN, INTERMEDIATE, VOCAB, source_len,
                                                 SEQ)
    assert got == pytest.approx(expected, rel=1e-12)
