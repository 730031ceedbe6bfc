"""Turn a Hugging Face checkpoint into a tfllm run directory.

    tfllm import gpt2 --run-dir runs/gpt2            # a local directory in Hugging Face layout
    tfllm import hf://openai-community/gpt2 --run-dir runs/gpt2   # downloaded first
    tfllm import hf://facebook/bart-base --run-dir runs/bart      # an encoder-decoder: a seq2seq run

The run holds config.yaml (the checkpoint's architecture as `model` keys), tokenizer/ (the
checkpoint's own tokenizer, with its chat template as chat_template.jinja when it has one) and
checkpoints/latest/ckpt-0 (its weights), so `tfllm generate`, `evaluate`, `export` and
`train.init_from` take it like a run tfllm trained; lineage.json records the digests of the
checkpoint's files, and manifest.json those of the run's. It appears whole or not at all.
"""

import os

from tfllm import config as config_lib
from tfllm import lineage
from tfllm.callbacks.checkpointer import LATEST_DIR, save_weights
from tfllm.errors import UserError
from tfllm.files import staging_directory
from tfllm.huggingface import load_model, read_config
from tfllm.huggingface.tokenizer import load_checkpoint_tokenizer
from tfllm.run import Run
from tfllm.tasks import TASKS

HUB_PREFIX = "hf://"
# The files an import reads (and downloads): weights, configs, tokenizer files, chat templates.
CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja")


def download(source):
    """The local directory of `source`: itself, or the Hub repository `hf://ORG/NAME` downloaded
    into huggingface_hub's cache (safetensors weights, configs, tokenizer files and chat templates
    only)."""
    if not source.startswith(HUB_PREFIX):
        if not os.path.isdir(source):
            raise UserError(f"{source} is not a directory; pass a checkpoint directory (config.json, "
                            "model.safetensors, tokenizer files) or hf://ORG/NAME")
        return source
    import huggingface_hub

    try:
        return huggingface_hub.snapshot_download(
            source[len(HUB_PREFIX):], allow_patterns=list(CHECKPOINT_FILES))
    except Exception as error:  # noqa: BLE001 - network, missing repository, gated model: one line each
        raise UserError(f"cannot download {source} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                        "download it on a machine with network (hf download ORG/NAME --local-dir DIR) "
                        "and import DIR") from None


def model_keys(backbone, task):
    """The `model` section that rebuilds `backbone` (a `GPTBackbone`, or a `Seq2SeqBackbone` for
    `task` seq2seq) for `task`."""
    if TASKS[task].encoder_decoder:
        return seq2seq_model_keys(backbone)
    options = backbone.get_config()
    return {
        "task": task, "num_layers": options["num_layers"], "num_heads": options["num_heads"],
        "hidden_dim": options["hidden_dim"], "intermediate_dim": options["intermediate_dim"],
        "seq_len": options["max_sequence_length"], "position": options["position"],
        "rope_theta": options["rope_theta"], "rope_scaling": config_lib.rope_scaling(options["llama3_scaling"]),
        "norm": options["norm"], "norm_epsilon": options["norm_epsilon"],
        "norm_position": "pre" if options["norm_first"] else "post", "mlp": options["mlp"],
        "num_kv_heads": options["num_key_value_heads"] or 0, "use_bias": options["use_bias"],
        # null unless it differs: Qwen2's query/key/value biases without the other projections'.
        "qkv_bias": None if options["qkv_bias"] == options["use_bias"] else options["qkv_bias"],
        "tie_embeddings": options["tie_embeddings"], "pooler": options["pooler"], "dropout": 0.0,
    }


def seq2seq_model_keys(backbone):
    """The `model` section that rebuilds a `Seq2SeqBackbone` (`tfllm.tasks.build_seq2seq_backbone`)."""
    options = backbone.get_config()
    return {
        "task": "seq2seq", "num_layers": options["num_encoder_layers"],
        "num_encoder_layers": options["num_encoder_layers"], "num_decoder_layers": options["num_decoder_layers"],
        "num_heads": options["num_heads"], "hidden_dim": options["hidden_dim"],
        "intermediate_dim": options["intermediate_dim"], "seq_len": options["max_sequence_length"],
        "source_len": options["max_source_length"], "position": options["position"],
        "rope_theta": options["rope_theta"], "norm": options["norm"], "norm_epsilon": options["norm_epsilon"],
        "norm_position": "pre" if options["norm_first"] else "post", "mlp": options["mlp"],
        "num_kv_heads": options["num_key_value_heads"] or 0, "use_bias": options["use_bias"],
        "tie_embeddings": options["tie_embeddings"], "dropout": 0.0,
    }


def import_checkpoint(source, run_dir):
    """Write the run of the checkpoint `source` (a directory or hf://ORG/NAME) into `run_dir`."""
    if os.path.exists(run_dir):
        raise UserError(f"run dir {run_dir} already exists; give tfllm import a new --run-dir")
    directory = download(source)
    _, family = read_config(directory)
    model = load_model(directory)
    tokenizer = load_checkpoint_tokenizer(directory)
    rows = model.backbone.vocabulary_size
    if tokenizer.vocabulary_size > rows:
        raise UserError(f"{directory}: the tokenizer has {tokenizer.vocabulary_size} ids and the model's embedding "
                        f"only {rows} rows; the tokenizer files belong to another model")
    tokenizer.padded_to(rows)  # an embedding rounded up past the tokenizer's ids (Qwen2)
    config = config_lib.from_dict({
        "model": model_keys(model.backbone, family.task),
        "data": {"tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocabulary_size},
    }, source=f"{directory}/config.json")
    os.makedirs(os.path.dirname(os.path.abspath(run_dir)), exist_ok=True)
    with staging_directory(run_dir) as staging:
        run = Run(staging)
        run.save_config(config)
        tokenizer.save(run.tokenizer_dir)
        save_weights(model, os.path.join(run.checkpoints_dir, LATEST_DIR), step=0)
        origin = lineage.source_record(source, directory, CHECKPOINT_FILES)
        lineage.record(staging, lineage.of_run(run, source=origin))
        run.write_manifest()
    return Run(run_dir)


def run(args):
    imported = import_checkpoint(args.source, args.run_dir)
    config = imported.config
    layers = (f"{config.num_encoder_layers} encoder and {config.num_decoder_layers} decoder"
              if TASKS[config.model.task].encoder_decoder else config.model.num_layers)
    print(f"Imported {args.source} into {args.run_dir}: {layers} layers, width "
          f"{config.model.hidden_dim}, {config.data.vocab_size} token ids, context {config.model.seq_len}; "
          f"try: tfllm generate --run-dir {args.run_dir} --prompt 'Hello'")
