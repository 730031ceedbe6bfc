"""The task table: everything that differs between `model.task`s, one record each.

Adding a task means adding a record here. The programs read a run's task from this table and
never ask which task it is: a record says what data the task trains on and how it is batched,
which model it builds, which validation metric picks its best checkpoint, which runs it may
start from, and what a trained run of it can do (generate, classify, export).
"""

import dataclasses
import typing

from tfllm import config as config_lib
from tfllm.data.labeled import read_classification, read_prompt_completion
from tfllm.data.masking import masked_lm_dataset
from tfllm.data.pipeline import lm_dataset
from tfllm.data.source_target import read_source_target
from tfllm.data.training_data import classify_data, corpus_data, seq2seq_data, sft_data
from tfllm.errors import UserError
from tfllm.flops import seq2seq_training_flops_per_token, training_flops_per_token
from tfllm.models.causal_lm import CausalLM
from tfllm.models.classifier import Classifier, pooled_position
from tfllm.models.gpt_backbone import GPTBackbone
from tfllm.models.masked_lm import MaskedLM
from tfllm.models.seq2seq_backbone import Seq2SeqBackbone
from tfllm.models.seq2seq_lm import Seq2SeqLM


def _attention_and_mlp(model_config):
    """The grouped-query share of key-value projections and the MLP's matrices, for FLOP counts."""
    m = model_config
    return {"key_value_fraction": (m.num_kv_heads or m.num_heads) / m.num_heads,
            "mlp_matrices": 3 if m.mlp == "swiglu" else 2}


@dataclasses.dataclass(frozen=True)
class Task:
    """One `model.task`.

    Args:
        name: the `model.task` value.
        summary: what a model of the task does, for messages ("labels texts").
        causal: whether its backbone attends causally; None: as the backbone it starts from
            (`train.init_from`), causal when trained from scratch.
        read_examples: reads its labeled `.jsonl` examples (`data.path`); None for a task that
            trains on raw text, cleaned into the run's corpus.
        datasets: `(config, source, tokenizer, strategy, causal) -> TrainingData`, where
            `source` is the prepared corpus (`CorpusStats`) or the `Examples`.
        head: `(backbone, config, num_classes) -> task model`.
        monitor: `(metric, mode)` of the validation metric that picks the best checkpoint and
            stops early when `train.monitor` is auto.
        init_from: the tasks whose runs it may start from (their backbone attends alike).
        generates: whether a trained run generates text (`tfllm generate`, generation metrics).
        export: the servable a trained run exports: "generation", "classify" or None.
        next_step: the command to suggest once it is trained, with `{run_dir}`.
        encoder_decoder: whether a prompt is a source that an encoder reads and the generated
            text a target on its own (printed alone; evaluated on source/target pairs, with
            the loss of the references), rather than a continuation of the prompt.
        backbone: `(config, vocabulary_size, causal) -> backbone` of the task model.
        pretrained_part: `(model, pretrained_task) -> the part of the model` that a run of
            `pretrained_task` (one of `init_from`) initializes: a backbone with the same weights.
        flops_per_token: `(config, vocabulary_size) -> training FLOPs per trained token`, for MFU.
    """

    name: str
    summary: str
    causal: typing.Optional[bool]
    read_examples: typing.Optional[typing.Callable]
    datasets: typing.Callable
    head: typing.Callable
    monitor: tuple
    init_from: tuple
    generates: bool
    export: typing.Optional[str]
    next_step: str
    encoder_decoder: bool = False
    backbone: typing.Callable = lambda config, vocabulary_size, causal: build_backbone(
        config.model, vocabulary_size, config.max_seq_len, causal, config.train.gradient_checkpointing)
    pretrained_part: typing.Callable = lambda model, pretrained_task: model.backbone
    flops_per_token: typing.Callable = lambda config, vocabulary_size: training_flops_per_token(
        config.model.num_layers, config.model.hidden_dim, config.model.intermediate_dim, vocabulary_size,
        config.model.seq_len, **_attention_and_mlp(config.model))

    @property
    def labeled(self):
        """Whether the run keeps a label map (`labels.json`)."""
        return self.read_examples is read_classification

    @property
    def evaluates(self):
        """Whether `tfllm evaluate` scores a trained run of it."""
        return self.generates or self.labeled

    def attends_causally(self, pretrained_causal=None):
        """Whether its backbone attends causally: as the task says, else as the pretrained
        backbone it starts from (`pretrained_causal`), causal when trained from scratch."""
        if self.causal is not None:
            return self.causal
        return True if pretrained_causal is None else bool(pretrained_causal)


def _masked_lm_datasets(config, corpus, tokenizer, strategy, causal):
    d = config.data
    return corpus_data(config, corpus, tokenizer, strategy, masked_lm_dataset, mask_rate=d.mask_rate,
                       whole_word=d.whole_word_masking)


TASKS = {
    task.name: task
    for task in (
        Task(
            name="causal_lm", summary="continues text", causal=True, read_examples=None,
            datasets=lambda config, corpus, tokenizer, strategy, causal: corpus_data(
                config, corpus, tokenizer, strategy, lm_dataset),
            head=lambda backbone, config, num_classes: CausalLM(backbone),
            monitor=("val_loss", "min"), init_from=("causal_lm", "sft"), generates=True, export="generation",
            next_step="tfllm generate --run-dir {run_dir} --prompt 'The '",
        ),
        Task(
            name="masked_lm", summary="fills in masked tokens", causal=False, read_examples=None,
            datasets=_masked_lm_datasets,
            head=lambda backbone, config, num_classes: MaskedLM(backbone),
            monitor=("val_loss", "min"), init_from=("masked_lm",), generates=False, export=None,
            next_step="tfllm train --config classify-tiny train.init_from={run_dir}",
        ),
        Task(
            name="classify", summary="labels texts", causal=None, read_examples=read_classification,
            datasets=lambda config, examples, tokenizer, strategy, causal: classify_data(
                config, examples, tokenizer, strategy, pooled_position("auto", causal)),
            head=lambda backbone, config, num_classes: Classifier(backbone, num_classes=num_classes,
                                                                  dropout=config.model.dropout),
            monitor=("val_accuracy", "max"), init_from=("causal_lm", "sft", "masked_lm"), generates=False,
            export="classify", next_step="tfllm evaluate --run-dir {run_dir} --data FILE.jsonl",
        ),
        Task(
            name="sft", summary="completes prompts", causal=True, read_examples=read_prompt_completion,
            datasets=lambda config, examples, tokenizer, strategy, causal: sft_data(
                config, examples, tokenizer, strategy),
            head=lambda backbone, config, num_classes: CausalLM(backbone),
            monitor=("val_loss", "min"), init_from=("causal_lm", "sft"), generates=True, export="generation",
            next_step="tfllm evaluate --run-dir {run_dir} --data FILE.jsonl",
        ),
        Task(
            name="seq2seq", summary="turns source texts into target texts", causal=True,
            read_examples=read_source_target,
            datasets=lambda config, examples, tokenizer, strategy, causal: seq2seq_data(
                config, examples, tokenizer, strategy),
            head=lambda backbone, config, num_classes: Seq2SeqLM(backbone),
            monitor=("val_loss", "min"), init_from=("seq2seq", "masked_lm"), generates=True, export="generation",
            next_step="tfllm evaluate --run-dir {run_dir} --data FILE.jsonl", encoder_decoder=True,
            backbone=lambda config, vocabulary_size, causal: build_seq2seq_backbone(config, vocabulary_size),
            # A masked LM's bidirectional backbone is the encoder's; the decoder starts fresh.
            pretrained_part=lambda model, pretrained_task: (
                model.backbone.encoder if pretrained_task == "masked_lm" else model.backbone),
            flops_per_token=lambda config, vocabulary_size: seq2seq_training_flops_per_token(
                config.num_encoder_layers, config.num_decoder_layers, config.model.hidden_dim,
                config.model.intermediate_dim, vocabulary_size, config.source_len, config.model.seq_len,
                **_attention_and_mlp(config.model)),
        ),
    )
}


def names_of(predicate):
    """The names of the tasks for which `predicate(task)` holds, for messages."""
    return [name for name, task in TASKS.items() if predicate(task)]


def listed(names, conjunction="and"):
    """`names` as a message lists them: "a", "a and b", "a, b and c"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _block_options(model_config, recompute=False):
    """The backbone arguments that both backbones take from the `model` section alike, and
    `recompute` (`train.gradient_checkpointing`)."""
    m = model_config
    return dict(recompute=recompute, num_heads=m.num_heads, hidden_dim=m.hidden_dim, intermediate_dim=m.intermediate_dim,
                dropout=m.dropout, position=m.position, norm=m.norm, norm_epsilon=m.norm_epsilon, mlp=m.mlp,
                num_key_value_heads=m.num_kv_heads or None, rope_theta=m.rope_theta, use_bias=m.use_bias,
                tie_embeddings=m.tie_embeddings, norm_first=m.norm_position == "pre")


def build_backbone(model_config, vocabulary_size, max_seq_len, causal, recompute=False):
    """The `model` section of a config as a `GPTBackbone` (explicit arguments only)."""
    m = model_config
    return GPTBackbone(vocabulary_size=vocabulary_size, num_layers=m.num_layers, max_sequence_length=max_seq_len,
                       causal=causal, llama3_scaling=config_lib.llama3_scaling(m.rope_scaling), qkv_bias=m.qkv_bias,
                       pooler=m.pooler, **_block_options(m, recompute))


def build_seq2seq_backbone(config, vocabulary_size):
    """The `model` section of a seq2seq config as a `Seq2SeqBackbone`; a `UserError` names a key
    it has no use for, rather than ignoring it."""
    m = config.model
    for key, value, default in (("rope_scaling", m.rope_scaling, None), ("qkv_bias", m.qkv_bias, None),
                                ("pooler", m.pooler, False)):
        if value != default:
            raise UserError(f"model.{key}={value!r} is not supported with model.task=seq2seq; remove it")
    return Seq2SeqBackbone(vocabulary_size=vocabulary_size, num_encoder_layers=config.num_encoder_layers,
                           num_decoder_layers=config.num_decoder_layers, max_source_length=config.source_len,
                           max_sequence_length=config.max_seq_len,
                           **_block_options(config.model, config.train.gradient_checkpointing))


def build_model(config, vocabulary_size, causal, num_classes=None):
    """The task model of `config` over a backbone that attends causally when `causal` (see
    `Task.attends_causally`). A classifier needs `num_classes`."""
    task = TASKS[config.model.task]
    return task.head(task.backbone(config, vocabulary_size, causal), config, num_classes)
