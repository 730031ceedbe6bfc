"""`tfllm export`: a trained run as a versioned SavedModel that takes text and returns text or labels.

    tfllm export --run-dir runs/demo --out exports/demo              # writes exports/demo/1/
    tfllm export --run-dir runs/demo --out exports/demo --version 3 --force
    saved_model_cli show --dir exports/demo/1 --all                  # the signatures
    tfllm serve --model exports/demo                                 # TF Serving's REST API

`OUT/N/` is TensorFlow Serving's layout: a SavedModel and `manifest.json` (task, config,
tokenizer, training step, the labels of a classifier, and a SHA-256 of every file). A
`causal_lm` or `sft` run gets the signatures `generate` (also `serving_default`) and `score`
(see `GenerationModule`); a `classify` run gets `classify` (also `serving_default`; see
`ClassifyModule`). A `masked_lm` run is not exported: fine-tune it into a classifier first.
A version is written to a temporary directory beside it and renamed into place, so TF
Serving, which polls `OUT`, never loads half a version.
"""

import datetime
import json
import os
import re
import shutil
import tempfile

import tensorflow as tf
import tensorflow_text

from tfllm.export.classify_module import ClassifyModule
from tfllm.export.generation_module import GenerationModule
from tfllm.export.manifest import read_manifest, write_manifest
from tfllm import runs
from tfllm.data.labeled import LabelMap
from tfllm.errors import UserError
from tfllm.files import replace_directory
from tfllm.tokenizers.tokenizer import CONFIG_FILENAME as TOKENIZER_CONFIG


def run(args):
    target = export(args.run_dir, args.out, version=args.version, force=args.force)
    if read_manifest(target)["task"] == "classify":
        signatures, serving = "classify = serving_default", ""
    else:
        signatures, serving = "generate = serving_default, score", " (TF Serving: --xla_cpu_compilation_enabled=true)"
    print(f"Exported {args.run_dir} to {target} (signatures: {signatures}); "
          f"serve it with: tfllm serve --model {args.out}{serving}")


def export(run_dir, out, version=None, force=False, jit_compile=True):
    """Writes `out/version/` from the run's best (else latest) checkpoint; returns its path.

    `jit_compile` compiles the decoding loop of a generation run with XLA (see
    `GenerationModule`); a classifier has no loop to compile.
    """
    if version is not None and version < 1:
        raise UserError(f"--version={version} is invalid: versions are integers >= 1")
    # Checked before anything is written: a run that cannot be exported leaves no directory.
    if runs.check_run_dir(run_dir).model.task == "masked_lm":
        raise UserError(f"{run_dir} is a masked_lm run, and masked_lm runs cannot be exported yet; "
                        "fine-tune them with model.task=classify (train.init_from=RUN) and export that run")
    out = os.path.abspath(out)
    prepare_export_dir(out)
    version = next_version(out) if version is None else version
    target = os.path.join(out, str(version))
    if os.path.exists(target) and not force:
        raise UserError(f"{target} already exists; pass --force to replace it, or another --version")
    config, tokenizer, model, checkpoint = runs.load_run(run_dir)
    module = make_module(run_dir, config, tokenizer, model, jit_compile)
    staging = make_staging_dir(out, version)
    try:
        module.save(staging)
        write_manifest(staging, describe(run_dir, config, checkpoint, version, module))
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def make_module(run_dir, config, tokenizer, model, jit_compile):
    """The servable module of the run's task: `ClassifyModule` or `GenerationModule`."""
    if config.model.task != "classify":
        return GenerationModule(model, tokenizer, max_length=config.max_seq_len, jit_compile=jit_compile)
    labels = LabelMap.load(runs.paths(run_dir)["labels"]).labels
    # Where training put the end-of-text id: first for a bidirectional backbone, last for a causal one.
    pooling = "last" if runs.read_backbone_causal(run_dir, config) else "first"
    return ClassifyModule(model, tokenizer, labels, seq_len=config.model.seq_len, pooling=pooling)


def prepare_export_dir(out):
    """Creates `out` if needed; a `UserError` when it cannot be created or written."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create export dir {out}: {error.strerror}; pass a writable --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"export dir {out} is not writable; pass a writable --out")


def next_version(out):
    """One more than the newest version under `out`, or 1."""
    versions = [int(name) for name in os.listdir(out) if name.isdigit()]
    return max(versions, default=0) + 1


def make_staging_dir(out, version):
    # A name TF Serving skips: it only loads directories named by an integer.
    try:
        staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=out)
    except OSError as error:
        raise UserError(f"cannot write in export dir {out}: {error.strerror}; pass a writable --out") from None
    # mkdtemp makes it private; a server running as another user must be able to read it.
    os.chmod(staging, 0o755)
    return staging


def training_step(checkpoint):
    """The step a checkpoint path like `.../ckpt-120` was written at, or None."""
    match = re.search(r"ckpt-(\d+)$", checkpoint)
    return int(match.group(1)) if match else None


def describe_signatures(signatures):
    """`{key: {"inputs": {name: {dtype, shape}}, "outputs": ...}}`; None in a shape is any size."""

    def spec(tensor):
        return {"dtype": tensor.dtype.name, "shape": tensor.shape.as_list()}

    return {
        key: {
            "inputs": {s.name: spec(s) for s in tf.nest.flatten(function.structured_input_signature)},
            "outputs": {name: spec(t) for name, t in function.structured_outputs.items()},
        }
        for key, function in signatures.items()
    }


def describe(run_dir, config, checkpoint, version, module):
    """What the manifest records besides the file digests."""
    tokenizer_path = os.path.join(runs.paths(run_dir)["tokenizer"], TOKENIZER_CONFIG)
    with open(tokenizer_path, encoding="utf-8") as file:
        tokenizer = json.load(file)
    if isinstance(module, ClassifyModule):
        task_fields = {"labels": module.labels, "seq_len": module.seq_len, "pooling": module.pooling}
    else:
        task_fields = {"jit_compile": module.jit_compile}
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": version,
        "run_dir": os.path.abspath(run_dir),
        "checkpoint": os.path.abspath(checkpoint),
        "training_step": training_step(checkpoint),
        "task": config.model.task,
        "max_length": config.max_seq_len,
        "config": config.to_dict(),
        "tokenizer": tokenizer,
        "signatures": describe_signatures(module.signatures()),
        **task_fields,
        "tensorflow_version": tf.__version__,
        "tensorflow_text_version": tensorflow_text.__version__,
    }
