"""The seeded validation split of labeled examples: whole groups (a built-in function's module) go
to one side; examples without groups split as they always have."""

import math
import pickle
import random
import types

import pytest

from tfllm import config as config_lib
from tfllm.data.example import Example, split_examples
from tfllm.errors import UserError
from tfllm.trainers.prepare_data import read_examples

# 40 examples in 8 groups of 1 to 9 examples.
SIZES = {"a": 9, "b": 1, "c": 7, "d": 2, "e": 6, "f": 3, "g": 8, "h": 4}
GROUPED = [Example(f"{group}{i}", "t", f"g.tsv:{n + 1}", group=group)
           for n, (group, i) in enumerate((g, i) for g, size in SIZES.items() for i in range(size))]


def groups(examples):
    return {example.group for example in examples}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_groups_stay_on_one_side_and_validation_gets_its_share(seed, val_fraction):
    train, val = split_examples(GROUPED, val_fraction, seed)
    assert not groups(train) & groups(val)
    assert sorted(train + val) == sorted(GROUPED)
    n_val = math.ceil(len(GROUPED) * val_fraction)
    assert len(val) >= n_val
    # Groups are taken only until the share is reached: without its last group, validation is short.
    last = val[-1].group
    assert len([e for e in val if e.group != last]) < n_val
    assert split_examples(GROUPED, val_fraction, seed) == (train, val)


def test_another_seed_gives_another_split():
    splits = {tuple(sorted(groups(split_examples(GROUPED, 0.25, seed)[1]))) for seed in range(10)}
    assert len(splits) > 3


def test_an_example_without_a_group_is_a_group_of_its_own():
    examples = GROUPED + [Example(f"loose{i}", "t", f"l.tsv:{i + 1}") for i in range(10)]
    for seed in range(5):
        train, val = split_examples(examples, 0.3, seed)
        assert not (groups(train) - {None}) & (groups(val) - {None})
        assert len(train) + len(val) == 50 and len(val) >= 15


def test_without_groups_the_split_is_the_example_level_shuffle():
    examples = [Example(f"x{i}", "t", f"p.jsonl:{i + 1}") for i in range(23)]
    for seed, val_fraction in [(0, 0.1), (7, 0.25), (42, 0.5)]:
        shuffled = list(examples)
        random.Random(seed).shuffle(shuffled)
        n_val = math.ceil(23 * val_fraction)
        train, val = split_examples(examples, val_fraction, seed)
        assert (train, val) == (shuffled[n_val:], shuffled[:n_val])
        assert [e.source for e in val] == [e.source for e in shuffled[:n_val]]
    assert split_examples(examples, 0.0, 0)[1] == []


def test_an_example_keeps_its_source_and_group_through_pickling():
    for example in (GROUPED[3], Example("s", "t", "p.tsv:1")):
        copy = pickle.loads(pickle.dumps(example))
        assert (copy, copy.source, copy.group) == (example, example.source, example.group)
    assert pickle.loads(pickle.dumps(GROUPED[3])).group == "a"


def prepared(examples, val_fraction, seed=0):
    config = config_lib.load_config(None, ["model.task=seq2seq", "data.path=pairs.tsv",
                                           f"data.val_fraction={val_fraction}", f"train.seed={seed}"])
    task = types.SimpleNamespace(name="seq2seq", read_examples=lambda path: list(examples), labeled=False)
    return read_examples(config, task)


def test_read_examples_splits_by_group(capsys):
    split = prepared(GROUPED, 0.25, seed=4)
    assert split.label_map is None
    assert not groups(split.train) & groups(split.val)
    assert (split.train, split.val) == split_examples(GROUPED, 0.25, 4)
    assert f"seq2seq: {len(split.train)} training and {len(split.val)} validation examples" in capsys.readouterr().out


def test_one_group_leaves_nothing_for_training():
    one_group = [Example(f"x{i}", "t", f"g.tsv:{i + 1}", group="m") for i in range(5)]
    with pytest.raises(UserError, match=r"pairs.tsv: 5 examples in 1 group\(s\), each kept on one side, leave none"):
        prepared(one_group, 0.2)
    with pytest.raises(UserError, match="pairs.tsv: 5 examples leave none for training or validation"):
        prepared([Example(*e[:2], e.source) for e in one_group], 0.0)
