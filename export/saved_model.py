"""`tfllm export`: a trained run as a versioned SavedModel that takes text and returns text or labels.

    tfllm export --run-dir runs/demo --out exports/demo              # writes exports/demo/1/
    tfllm export --run-dir runs/demo --out exports/demo --version 3 --force
    saved_model_cli show --dir exports/demo/1 --all                  # the signatures
    tfllm serve --model exports/demo                                 # TF Serving's REST API
    tfllm export --run-dir runs/demo --out exports/demo --encrypt-key-file model.key

`OUT/N/` is TensorFlow Serving's layout: a SavedModel and `manifest.json` (task, config,
tokenizer, training step, the labels of a classifier, the run's lineage, and a SHA-256 of every
file); with `--sign-key-file KEY`, `manifest.json.sig` too (`tfllm.signing`). A
`causal_lm` or `sft` run gets the signatures `generate` (also `serving_default`) and `score`
(see `GenerationModule`); a `classify` run gets `classify` (also `serving_default`; see
`ClassifyModule`). A `masked_lm` run is not exported: fine-tune it into a classifier first.
A version is written to a temporary directory beside it and renamed into place, so TF
Serving, which polls `OUT`, never loads half a version. With `--encrypt-key-file` (or a run
trained with `train.encrypt_key_file`, whose checkpoints are encrypted: its export is too) the
weights are sealed with that key (export/encrypted_export.py) and `tfllm serve` needs it.
"""

import datetime
import os

import tensorflow as tf
import tensorflow_text

from tfllm import lineage
from tfllm.callbacks.checkpointer import checkpoint_step
from tfllm.digests import sha256_of_file
from tfllm.encryption import read_key
from tfllm.errors import UserError
from tfllm.export.classify_module import ClassifyModule
from tfllm.export.encrypted_export import save_encrypted
from tfllm.export.generation_module import GenerationModule
from tfllm.manifest import read_manifest, write_manifest
from tfllm.files import staging_directory
from tfllm.run import Run
from tfllm.signing import load_private_key, sign_manifest


def run(args):
    # Read first: a bad key file fails before minutes of export.
    signing_key = load_private_key(args.sign_key_file) if getattr(args, "sign_key_file", None) else None
    target = export(args.run_dir, args.out, version=args.version, force=args.force,
                    precision=export_precision(args.precision, args.quantize),
                    encrypt_key_file=getattr(args, "encrypt_key_file", None), signing_key=signing_key)
    manifest = read_manifest(target)
    signatures = manifest["signatures"]
    # The signature the default serves first: "generate = serving_default, score".
    default = [key for key in signatures if key not in ("serving_default", "score")] + ["serving_default"]
    names = " = ".join(default) + (", score" if "score" in signatures else "")
    serving = " (TF Serving: --xla_cpu_compilation_enabled=true)" if manifest.get("jit_compile") else ""
    encryption = manifest.get("encryption")
    if encryption:
        serving = ""  # TF Serving cannot open encrypted weights
    key = f" --encrypt-key-file {encryption_key_file(args)}" if encryption else ""
    sealed = f", weights encrypted with key id {encryption['key_id']}" if encryption else ""
    print(f"Exported {args.run_dir} to {target} (signatures: {names}{sealed}); "
          f"serve it with: tfllm serve --model {args.out}{key}{serving}")


def encryption_key_file(args):
    """The key file an export was encrypted with: --encrypt-key-file, else the run's."""
    return getattr(args, "encrypt_key_file", None) or Run.open(args.run_dir).encrypt_key_file


def export_precision(precision, quantize):
    """The precision of `--precision` and the older `--quantize int8` (the same as
    `--precision int8`); a `UserError` when the two disagree."""
    if quantize == "int8" and precision not in (None, "int8"):
        raise UserError(f"--quantize int8 and --precision {precision} disagree; pass --precision alone")
    return "int8" if quantize == "int8" else (precision or "float32")


def export(run_dir, out, version=None, force=False, jit_compile=True, precision="float32", encrypt_key_file=None,
           signing_key=None):
    """Writes `out/version/` from the run's best (else latest) checkpoint; returns its path.

    `jit_compile` compiles the decoding loop of a generation run with XLA (see
    `GenerationModule`); a classifier has no loop to compile. A LoRA run is exported with its
    adapters merged into the weights, so serving pays nothing for them; `precision` is that of
    the weights (`tfllm.precision.for_decoding`): "int8" stores the projections and embeddings
    in int8 (one scale per channel), "bfloat16" every weight in bfloat16. With
    `encrypt_key_file`, or for a run whose checkpoints are encrypted (`train.encrypt_key_file`),
    the run is read and its weights written sealed with that key (`save_encrypted`). With
    `signing_key` (an Ed25519 private key) the version holds its manifest's signature from the
    moment it appears.
    """
    if version is not None and version < 1:
        raise UserError(f"--version={version} is invalid: versions are integers >= 1")
    # Checked before anything is written: a run that cannot be exported leaves no directory.
    run = Run.open(run_dir, encrypt_key_file=encrypt_key_file)
    key = read_key(run.encrypt_key_file) if run.encrypt_key_file else None
    task = run.task
    if task.export is None:
        raise UserError(f"{run_dir} is a {task.name} run, and {task.name} runs cannot be exported yet; "
                        f"try: {task.next_step.format(run_dir=run_dir)}, and export that run")
    out = os.path.abspath(out)
    prepare_export_dir(out)
    version = next_version(out) if version is None else version
    target = os.path.join(out, str(version))
    if os.path.exists(target) and not force:
        raise UserError(f"{target} already exists; pass --force to replace it, or another --version")
    model, checkpoint = run.load_servable_model(precision)
    module = make_module(run, model, jit_compile)
    try:
        # A name TF Serving skips: it only loads directories named by an integer.
        with staging_directory(target, prefix=f".tmp-{version}-") as staging:
            description = {**describe(run, checkpoint, version, module), "precision": precision,
                           "quantize": "int8" if precision == "int8" else "none"}
            if key is None:
                module.save(staging)
            else:
                # Saved into memory and sealed from there: the plaintext weights never reach a disk.
                description["encryption"] = save_encrypted(module.save, staging, key)
            write_manifest(staging, description)
            if signing_key is not None:
                sign_manifest(staging, signing_key)
    except OSError as error:
        raise UserError(f"cannot write in export dir {out}: {error.strerror}; pass a writable --out") from None
    return target


def make_module(run, model, jit_compile):
    """The servable module of the run's task (`Task.export`)."""
    config = run.config
    if run.task.export == "classify":
        return ClassifyModule(model, run.tokenizer, run.labels.labels, seq_len=config.model.seq_len,
                              pooling=model.pooled_position)
    return GenerationModule(model, run.tokenizer, max_length=config.max_seq_len, jit_compile=jit_compile)


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


def describe(run, checkpoint, version, module):
    """What the manifest records besides the file digests."""
    if isinstance(module, ClassifyModule):
        task_fields = {"labels": module.labels, "seq_len": module.seq_len, "pooling": module.pooling}
    else:
        task_fields = {"jit_compile": module.jit_compile}
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": version,
        "run_dir": os.path.abspath(run.path),
        "checkpoint": os.path.abspath(checkpoint),
        "training_step": checkpoint_step(checkpoint),
        "task": run.task.name,
        "max_length": run.config.max_seq_len,
        "config": run.config.to_dict(),
        "tokenizer": run.tokenizer_description,
        **lineage_fields(run),
        "signatures": describe_signatures(module.signatures()),
        **task_fields,
        "tensorflow_version": tf.__version__,
        "tensorflow_text_version": tensorflow_text.__version__,
    }


def write_signed_manifest(directory, run, checkpoint, description, signing_key=None):
    """The manifest of an export of `run`'s `checkpoint` that is not a SavedModel (a Hugging Face
    checkpoint, adapters): `description`, where it came from and the run's lineage; signed with
    `signing_key` when given."""
    write_manifest(directory, {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": os.path.abspath(run.path), "checkpoint": os.path.abspath(checkpoint),
        "training_step": checkpoint_step(checkpoint), "task": run.task.name, **lineage_fields(run), **description,
    })
    if signing_key is not None:
        sign_manifest(directory, signing_key)


def lineage_fields(run):
    """What an export records of its run: the run's lineage.json (null for a run made before
    runs kept one), and the digest of the run's manifest, which pins every file of the run."""
    manifest = run.manifest_path
    return {"lineage": lineage.read(run.path),
            "run_manifest_sha256": sha256_of_file(manifest) if os.path.exists(manifest) else None}
