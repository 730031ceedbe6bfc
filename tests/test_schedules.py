import math

import numpy as np
import pytest

from tfllm.schedules import WarmupCosineDecay


def reference(step, peak, low, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))


def test_matches_reference_over_whole_run():
    schedule = WarmupCosineDecay(1e-3, 1e-4, warmup_steps=10, decay_steps=100)
    steps = np.arange(0, 130)
    got = np.array([float(schedule(s)) for s in steps])
    want = np.array([reference(s, 1e-3, 1e-4, 10, 100) for s in steps])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[9] == pytest.approx(1e-3) and got[129] == pytest.approx(1e-4)


def test_no_warmup_starts_at_peak():
    schedule = WarmupCosineDecay(2e-3, 0.0, warmup_steps=0, decay_steps=10)
    assert float(schedule(0)) == pytest.approx(2e-3)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-9)


def test_get_config_round_trip():
    schedule = WarmupCosineDecay(1e-3, 1e-4, warmup_steps=3, decay_steps=20)
    clone = WarmupCosineDecay(**schedule.get_config())
    assert [float(clone(s)) for s in range(25)] == [float(schedule(s)) for s in range(25)]


def test_rejects_bad_steps():
    with pytest.raises(ValueError, match="decay_steps"):
        WarmupCosineDecay(1e-3, 0.0, warmup_steps=0, decay_steps=0)
