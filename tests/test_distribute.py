import json

import pytest
import tensorflow as tf

from tfllm import distribute
from tfllm.errors import UserError


def test_two_cpu_replicas_mirror_over_two_devices():
    strategy = distribute.make_strategy("mirrored", cpu_replicas=2)
    assert strategy.num_replicas_in_sync == 2
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert distribute.is_chief(strategy)


def test_one_device_on_cpu():
    strategy = distribute.make_strategy("one_device")
    assert strategy.num_replicas_in_sync == 1
    assert "CPU:0" in strategy.extended.worker_devices[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "horovod"}, "distribute.strategy='horovod' is unknown; use one of auto, one_device"),
        ({"strategy": "auto", "cpu_replicas": 0}, "distribute.cpu_replicas=0 is invalid"),
        ({"strategy": "mirrored", "cpu_replicas": 3}, "cpu_replicas=3 cannot be applied"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        distribute.make_strategy(**kwargs)


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), 'no "cluster"'),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}), '"task" must name'),
        (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 2}}), "index 2 is outside"),
    ],
)
def test_malformed_tf_config(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=message):
        distribute.make_strategy("multi_worker")


def test_split_batch():
    assert distribute.split_batch(32, 2, 4) == 4
    with pytest.raises(UserError, match=r"train.batch_size=30 does not divide into 2 replica\(s\) x 4"):
        distribute.split_batch(30, 2, 4)


def test_int8_weights_are_refused_across_workers_in_one_line(monkeypatch):
    from tfllm import compat
    from tfllm.distribute import check_quantize

    check_quantize(tf.distribute.get_strategy(), "int8")  # one process: allowed
    monkeypatch.setattr(compat, "is_multi_worker", lambda strategy: True)
    check_quantize(tf.distribute.get_strategy(), "none")
    with pytest.raises(UserError, match=r"train\.quantize=int8 fails with several worker processes"):
        check_quantize(tf.distribute.get_strategy(), "int8")
