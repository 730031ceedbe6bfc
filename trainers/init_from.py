"""`train.init_from: RUN_DIR`: start a run from the tokenizer and backbone of a pretrained run.

The new run must build the very same backbone (the model keys in `runs.BACKBONE_KEYS`, the
context length with learned positions, the tokenizer) from a task whose attention it shares
(`runs.INIT_FROM_TASKS`); anything else is refused before training, naming the keys to change.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from tfllm import runs
from tfllm.errors import UserError
from tfllm.files import replace_directory


def check(config):
    """The pretrained run's config when `train.init_from` is set (checked against `config`), else None."""
    origin = config.train.init_from
    if not origin:
        return None
    try:
        pretrained = runs.check_run_dir(origin)
    except UserError as e:
        raise UserError(f"train.init_from={origin}: {e}") from None
    task, pretrained_task = config.model.task, pretrained.model.task
    if pretrained_task not in runs.INIT_FROM_TASKS[task]:
        raise UserError(
            f"train.init_from={origin} is a {pretrained_task} run; a {task} run starts from "
            f"{' or '.join(runs.INIT_FROM_TASKS[task])} runs only"
        )
    differing = [
        f"model.{key}={getattr(config.model, key)!r} (pretrained: {getattr(pretrained.model, key)!r})"
        for key in runs.BACKBONE_KEYS if getattr(config.model, key) != getattr(pretrained.model, key)
    ]
    if config.model.position == "learned" and config.max_seq_len != pretrained.max_seq_len:
        differing.append(f"model.max_seq_len={config.max_seq_len} (pretrained: {pretrained.max_seq_len})")
    for key in ("tokenizer", "vocab_size"):
        if getattr(config.data, key) != getattr(pretrained.data, key):
            differing.append(f"data.{key}={getattr(config.data, key)!r} (pretrained: {getattr(pretrained.data, key)!r})")
    if differing:
        raise UserError(
            f"train.init_from={origin} has another shape or tokenizer: {'; '.join(differing)}; "
            "set these keys to the pretrained values"
        )
    return pretrained


def copy_tokenizer(config, p):
    """The pretrained tokenizer becomes this run's (written whole, then renamed into place)."""
    source = runs.paths(config.train.init_from)["tokenizer"]
    if os.path.exists(os.path.join(p["tokenizer"], "tokenizer.json")):
        return
    if not os.path.exists(os.path.join(source, "tokenizer.json")):
        raise UserError(f"train.init_from={config.train.init_from} has no tokenizer/; train that run first")
    staging = tempfile.mkdtemp(prefix=".tokenizer.", dir=os.path.dirname(os.path.abspath(p["tokenizer"])))
    os.rmdir(staging)
    shutil.copytree(source, staging)
    replace_directory(staging, p["tokenizer"])


def load_backbone(model, config):
    """Copy the pretrained backbone's trained weights into `model.backbone`, tensor by tensor."""
    origin = config.train.init_from
    _, _, pretrained, checkpoint = runs.load_run(origin)
    source, target = pretrained.backbone.weights, model.backbone.weights
    if len(source) != len(target):
        raise UserError(
            f"train.init_from={origin}: its backbone has {len(source)} weight tensors, this model "
            f"{len(target)}; use a run with the same model keys"
        )
    for src, dst in zip(source, target):
        if tuple(src.shape) != tuple(dst.shape):
            raise UserError(
                f"train.init_from={origin}: weight {src.path} has shape {tuple(src.shape)}, this model "
                f"needs {tuple(dst.shape)}; use a run with the same model keys"
            )
        dst.assign(np.asarray(src.numpy(), dtype=dst.dtype))
    print(f"Initialized the backbone from {checkpoint}")
    return checkpoint


def write_backbone_info(config, p, causal):
    """backbone.json: where the backbone came from and whether it attends causally."""
    info = {"init_from": config.train.init_from, "causal": bool(causal)}
    with open(p["backbone"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(p["backbone"] + ".tmp", p["backbone"])
