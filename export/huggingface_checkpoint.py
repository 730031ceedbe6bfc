"""`tfllm export --format huggingface`: a run as a checkpoint `transformers` loads.

    tfllm export --run-dir runs/gpt2-sft --out gpt2-sft --format huggingface

Writes `config.json`, `model.safetensors` and, for a run whose tokenizer came with a checkpoint
(`tfllm import`), the tokenizer files, into a new directory that appears whole or not at all;
`manifest.json` beside them (which transformers ignores) holds the run's lineage and a SHA-256 of
every file, and `--sign-key-file KEY` signs it.
"""

import functools

from tfllm.errors import UserError
from tfllm.export.saved_model import export_precision, write_signed_manifest
from tfllm.huggingface import save_pretrained
from tfllm.huggingface.tokenizer import writes_tokenizer
from tfllm.run import Run
from tfllm.signing import load_private_key


def run(args):
    source = Run.open(args.run_dir, getattr(args, "encrypt_key_file", None))
    source.refuse_plaintext("--format huggingface")
    precision = export_precision(args.precision, args.quantize)
    if precision != "float32":
        flag = "--quantize int8" if args.quantize != "none" else f"--precision {precision}"
        raise UserError(f"{flag} is for --format savedmodel; a Hugging Face checkpoint is written in float32")
    signing_key = load_private_key(args.sign_key_file) if getattr(args, "sign_key_file", None) else None
    model, checkpoint = source.load_servable_model()
    tokenizer = source.tokenizer if writes_tokenizer(source.tokenizer) else None
    manifest = functools.partial(write_signed_manifest, run=source, checkpoint=checkpoint,
                                 description={"format": "huggingface"}, signing_key=signing_key)
    family = save_pretrained(model, args.out, tokenizer=tokenizer, finish=manifest)
    note = "" if tokenizer else (f"; its {source.tokenizer.kind} tokenizer is not written (only tokenizers "
                                 "imported with a checkpoint are, so far)")
    print(f"Exported {checkpoint} as a {family.model_type} checkpoint to {args.out}{note}")
