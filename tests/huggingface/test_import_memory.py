"""Importing holds about one copy of the model: its peak memory is measured, not assumed."""

import json
import subprocess
import sys

from tests.huggingface.conftest import torch, transformers
from tests.trainers.run_testing import REPO

# The peak a one-tensor-at-a-time import must stay under, as a multiple of the model's size.
PEAK_OVER_MODEL = 1.5
# A fresh process (no memory freed by earlier tests to reuse) imports a tiny checkpoint first, so
# that TensorFlow's own first-use allocations are not counted, then the measured one.
MEASURE = """
import json, sys
from tfllm.huggingface import load_model
def mib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024
load_model(sys.argv[1])
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak (VmHWM) starts again from the current resident size
before = mib("VmRSS")
model = load_model(sys.argv[2])
rise = mib("VmHWM") - before
print(json.dumps({"rise": rise, "size": sum(4 * w.shape.num_elements() for w in model.weights) / 2**20}))
"""


def gpt2(directory, **sizes):
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_positions=64, **sizes)).save_pretrained(directory)
    return str(directory)


def test_import_peaks_below_one_and_a_half_models(tmp_path):
    # GPT-2 small's proportions at two thirds of its width: a 67 MB embedding table (read in
    # blocks of rows) and eight blocks, 167 MB in all (TensorFlow's fixed costs stay small beside it).
    measured = gpt2(tmp_path / "measured", vocab_size=32768, n_embd=512, n_layer=8, n_head=8)
    tiny = gpt2(tmp_path / "tiny", vocab_size=64, n_embd=8, n_layer=1, n_head=2)
    done = subprocess.run([sys.executable, "-c", MEASURE, tiny, measured], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] > 150
    assert result["rise"] < PEAK_OVER_MODEL * result["size"], (
        f"import peaked {result['rise']:.0f} MiB above its start for a {result['size']:.0f} MiB model")
