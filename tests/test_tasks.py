"""The task table: one record per `model.task`, and no other code that asks which task a run is."""

import os
import re

import pytest

from tfllm import config as config_lib
from tfllm.models import CausalLM, Classifier, MaskedLM
from tfllm.tasks import TASKS, build_model, names_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(task):
    return config_lib.load_config(None, [f"model.task={task}", "model.num_layers=1", "model.num_heads=2",
                                         "model.hidden_dim=8", "model.intermediate_dim=16", "model.seq_len=8"])


def test_every_config_task_has_one_record_under_its_name():
    assert sorted(TASKS) == sorted(config_lib.TASKS)
    assert all(name == task.name for name, task in TASKS.items())


def test_a_task_starts_only_from_runs_whose_backbone_attends_alike():
    for task in TASKS.values():
        model = build_model(tiny_config(task.name), 20, task.attends_causally(), num_classes=3)
        for origin in task.init_from:
            part = task.pretrained_part(model, origin)
            assert task.causal is None or TASKS[origin].causal == getattr(part, "causal", True), (task.name, origin)
    # A seq2seq run takes a masked LM's backbone as its (bidirectional) encoder.
    seq2seq = build_model(tiny_config("seq2seq"), 20, True)
    assert TASKS["seq2seq"].pretrained_part(seq2seq, "masked_lm") is seq2seq.backbone.encoder
    assert TASKS["seq2seq"].pretrained_part(seq2seq, "seq2seq") is seq2seq.backbone


@pytest.mark.parametrize("task, model_class, causal, pooled", [
    ("causal_lm", CausalLM, True, None),
    ("sft", CausalLM, True, None),
    ("masked_lm", MaskedLM, False, None),
    ("classify", Classifier, True, "last"),
    ("classify", Classifier, False, "first"),
])
def test_build_model_puts_the_task_head_on_a_backbone_that_attends_as_the_task_says(task, model_class, causal,
                                                                                   pooled):
    record = TASKS[task]
    attends = record.attends_causally(pretrained_causal=causal)
    model = build_model(tiny_config(task), 20, attends, num_classes=3 if record.labeled else None)
    assert isinstance(model, model_class) and model.backbone.causal is causal
    if pooled:
        assert model.pooled_position == pooled


def test_what_each_task_can_do_afterwards():
    assert names_of(lambda t: t.generates) == ["causal_lm", "sft", "seq2seq"]
    assert names_of(lambda t: t.labeled) == ["classify"]
    assert names_of(lambda t: t.evaluates) == ["causal_lm", "classify", "sft", "seq2seq"]
    assert names_of(lambda t: t.encoder_decoder) == ["seq2seq"]
    assert {name: task.export for name, task in TASKS.items()} == {
        "causal_lm": "generation", "masked_lm": None, "classify": "classify", "sft": "generation",
        "seq2seq": "generation"}
    assert TASKS["classify"].monitor == ("val_accuracy", "max") and TASKS["masked_lm"].monitor == ("val_loss", "min")
    # A classifier trained from scratch attends causally; one fine-tuned takes its backbone's attention.
    assert TASKS["classify"].attends_causally() is True
    assert TASKS["masked_lm"].attends_causally(pretrained_causal=True) is False


def test_only_the_task_table_asks_which_task_a_run_is():
    asking = re.compile(r"task ==|task !=|is_causal")
    found = []
    for top in ("tfllm", "trainers", "export"):
        for root, _, names in os.walk(os.path.join(REPO, top)):
            for name in names:
                path = os.path.join(root, name)
                if name.endswith(".py") and os.path.relpath(path, REPO) != os.path.join("tfllm", "tasks.py"):
                    with open(path, encoding="utf-8") as f:
                        found += [f"{path}:{n}" for n, line in enumerate(f, 1) if asking.search(line)]
    assert found == []
