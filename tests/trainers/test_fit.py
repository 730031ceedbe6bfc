"""The fit loop's figures a reader must be able to trust: MFU against a measured CPU peak."""

import json
import os

from tests.trainers.run_testing import corpus, tiny  # noqa: F401  (corpus: a fixture)
from tfllm import cli


def test_mfu_against_the_measured_cpu_peak_stays_below_one(corpus, tmp_path, capsys):  # noqa: F811
    run_dir = str(tmp_path / "run")
    # No train.peak_flops: the peak is the best matmul timing, taken before the input pipeline
    # starts. A model cannot beat the hardware's own large matmul, so MFU > 1 means the peak
    # was measured too low (while other threads held the cores, or on too small a matmul).
    assert cli.main(["train", "--run-dir", run_dir, *tiny(corpus, train__peak_flops=0)]) == 0
    assert "(measured CPU matmul)" in capsys.readouterr().out
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        mfu = [record["mfu"] for record in map(json.loads, f)]
    assert mfu and all(0 < value < 1 for value in mfu), mfu
