"""`train.init_from: RUN_DIR`: start a run from the tokenizer and backbone of a pretrained run.

As a peer's `from_pretrained` does, the pretrained run fixes what its weights and tokenizer
need: its model shape (`FIXED_MODEL_KEYS`, and the context with learned positions) and its
tokenizer keys are taken from it. A key the user set that contradicts it is refused, naming it;
so is a pretrained task whose backbone attends otherwise (`Task.init_from`).
"""

from tfllm import config as config_lib
from tfllm.callbacks.checkpointer import check_base, read_base
from tfllm.errors import UserError
from tfllm.run import Run, start_from
from tfllm.tasks import TASKS, listed

# The model keys that fix the backbone's weights.
FIXED_MODEL_KEYS = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "position", "rope_theta",
                    "rope_scaling", "norm", "norm_epsilon", "norm_position", "mlp", "num_kv_heads", "use_bias",
                    "qkv_bias", "tie_embeddings", "pooler", "num_encoder_layers", "num_decoder_layers")
FIXED_DATA_KEYS = ("tokenizer", "vocab_size")


def resolve(config, written_keys=None):
    """`(config, pretrained)`: `config` with the keys the pretrained run fixes taken from it, and
    that run's `Run`; `(config, None)` without `train.init_from`.

    `written_keys` are the dotted keys the user set (in the YAML file or an override); None
    takes every key that differs from its default as set.
    """
    origin = config.train.init_from
    if not origin:
        return config, None
    try:
        pretrained = Run.open(origin)
        previous = pretrained.config
    except UserError as e:
        raise UserError(f"train.init_from={origin}: {e}") from None
    task, pretrained_task = config.model.task, previous.model.task
    if pretrained_task not in TASKS[task].init_from:
        raise UserError(
            f"train.init_from={origin} is a {pretrained_task} run; a {task} run starts from "
            f"{listed(TASKS[task].init_from, 'or')} runs only"
        )
    fixed = {f"model.{key}": getattr(previous.model, key) for key in FIXED_MODEL_KEYS}
    fixed.update({f"data.{key}": getattr(previous.data, key) for key in FIXED_DATA_KEYS})
    if previous.model.position == "learned":
        # Learned position embeddings have one row per position of the pretrained context.
        fixed["model.max_seq_len"] = previous.max_seq_len
        fixed["model.source_len"] = previous.model.source_len
    current, defaults = config.flat(), config_lib.Config().flat()
    if written_keys is None:
        written_keys = {key for key, value in current.items() if value != defaults[key]}
    clashes = [f"{key}={current[key]!r} (pretrained: {value!r})" for key, value in fixed.items()
               if key in written_keys and current[key] != value and not _same_context(key, config, value)]
    if clashes:
        raise UserError(
            f"train.init_from={origin} has another shape or tokenizer: {'; '.join(clashes)}; remove these keys "
            "from the config and overrides (the pretrained run's values are taken) or start from another run"
        )
    # The training length follows the pretrained run's unless set: its context suits its weights.
    inherited = {} if "model.seq_len" in written_keys else {"model.seq_len": previous.model.seq_len}
    config = config.replace({**fixed, **inherited})
    config_lib.validate(config, f"train.init_from={origin}")
    return config, pretrained


def _same_context(key, config, value):
    """`model.max_seq_len` 0 means the training length: the same context written another way."""
    return key == "model.max_seq_len" and config.max_seq_len == value


def base_checkpoint(pretrained, resume, key_file=None):
    """The checkpoint of the pretrained `Run` that the backbone starts from: the one a resumed
    LoRA run recorded (refused when it changed; the resumed checkpoint read with the key in
    `key_file`), else the pretrained run's best (else latest); None without `train.init_from`."""
    if pretrained is None:
        return None
    if resume.checkpoint:
        base = read_base(resume.checkpoint, key_file)
        if base is not None:
            check_base(base, resume.checkpoint)
            return base["checkpoint"]
    checkpoint = pretrained.checkpoints.preferred()
    if checkpoint is None:
        raise UserError(f"train.init_from={pretrained.path} has no checkpoint under checkpoints/; train that run "
                        "first, or start from another")
    return checkpoint


def load_backbone(model, pretrained, task, checkpoint=None, train_config=None):
    """`tfllm.run.start_from`, saying which checkpoint it read."""
    checkpoint = start_from(model, task, pretrained, checkpoint, train_config)
    print(f"Initialized the backbone from {checkpoint}")
    return checkpoint
