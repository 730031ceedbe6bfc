"""`tfllm export --adapters-only`: a LoRA run's adapters alone, to swap over one base.

    tfllm export --run-dir runs/lora --out adapters/lora --adapters-only

Writes `adapters.safetensors` (what the run trains: its adapters, and a new head) and
`adapters.json` (the base checkpoint and its fingerprint, the LoRA settings, the task) into a
new directory that appears whole or not at all. `tfllm.lora.load_adapters` reads them back into
a model of the same config, adapted over the same base. `manifest.json` holds the run's lineage
and a SHA-256 of both files; `--sign-key-file KEY` signs it.
"""

import os

from tfllm.callbacks.checkpointer import checkpoint_step, read_base
from tfllm.errors import UserError
from tfllm.export.saved_model import write_signed_manifest
from tfllm.files import staging_directory
from tfllm.lora import parameter_counts, save_adapters
from tfllm.run import Run
from tfllm.signing import load_private_key


def run(args):
    signing_key = load_private_key(args.sign_key_file) if getattr(args, "sign_key_file", None) else None
    out = export_adapters(args.run_dir, args.out, signing_key)
    print(f"Exported the adapters of {args.run_dir} to {out}")


def export_adapters(run_dir, out, signing_key=None):
    source = Run.open(run_dir)
    source.refuse_plaintext("--adapters-only")
    model, checkpoint = source.load_model()
    base = read_base(checkpoint)
    if base is None:
        raise UserError(f"{run_dir} trains every weight (train.lora_rank=0): it has no adapters; "
                        "export it without --adapters-only")
    if os.path.exists(out):
        raise UserError(f"{out} already exists; choose a new --out for the adapters")
    t = source.config.train
    trained, frozen = parameter_counts(model)
    info = {"task": source.task.name, "base": base, "checkpoint": os.path.abspath(checkpoint),
            "training_step": checkpoint_step(checkpoint), "lora_rank": t.lora_rank, "lora_alpha": t.lora_alpha,
            "lora_targets": t.lora_targets, "lora_dropout": t.lora_dropout, "quantize": t.quantize,
            "trained_parameters": trained, "frozen_parameters": frozen}
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with staging_directory(out) as staging:
            save_adapters(model, staging, info)
            write_signed_manifest(staging, source, checkpoint, {"format": "adapters"}, signing_key)
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror}; pass a writable --out") from None
    return out
