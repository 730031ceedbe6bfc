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
