"""The `tfllm` command. Programs are imported lazily so `tfllm --help` answers at once.

A `UserError` (bad input a user can fix) prints one line on stderr and exits with code 2; so does
a command line argparse refuses (its usage is one `--help` away).
"""

import argparse
import os
import sys

from tfllm.errors import TrainingInterrupted, UserError

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = "gpt-tiny"
# export/request_batcher.py's DEFAULT_TIMEOUT_MS, without importing TensorFlow for --help.
DEFAULT_BATCH_TIMEOUT_MS = 5
# tfllm.precision.DECODING_PRECISIONS, without importing TensorFlow for --help.
DECODING_PRECISIONS = ("float32", "bfloat16", "int8")
EXPORT_FORMATS = {"savedmodel": "tfllm.export.saved_model", "huggingface": "tfllm.export.huggingface_checkpoint"}


class Parser(argparse.ArgumentParser):
    """argparse's parser, with its usage errors in the one-line form of every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def bounded_int(name, low, high, what, note=""):
    """An argparse type: an int in [low, high], else the line "VALUE is not WHAT (LOW-HIGH NOTE)".
    `name` is what argparse calls a value it cannot read as an int ("invalid NAME value")."""
    def parse(text):
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not {what} ({low}-{high}{note})")
        return value

    parse.__name__ = name
    return parse


# `socket` would quietly take port 99999 as 99999 % 65536.
port = bounded_int("port", 0, 65535, "a port number", "; 0 picks a free one")
milliseconds = bounded_int("milliseconds", 0, 60_000, "a wait in milliseconds", "; 0 waits for nothing")
thread_count = bounded_int("thread_count", 1, 1024, "a number of threads")


def resolve_config_path(name):
    """A config given as a path, or as the name of a file in the project's configs/ directory."""
    if os.path.exists(name):
        return name
    candidate = os.path.join(CONFIGS_DIR, name if name.endswith(".yaml") else name + ".yaml")
    if os.path.exists(candidate):
        return candidate
    raise UserError(f"config {name} not found (looked in . and {CONFIGS_DIR}); pass an existing YAML file")


def config_keys_help():
    from tfllm.config import field_docs

    lines = ["config keys (override any with section.key=value):"]
    for key, default, doc in field_docs():
        lines.append(f"  {key} = {default!r}\n      {doc}")
    return "\n".join(lines)


def add_train(sub):
    add_config_arguments(sub.add_parser(
        "train", help="train a model from a YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_keys_help(),
    ), "tfllm.trainers.train")


def add_prepare(sub):
    add_config_arguments(sub.add_parser(
        "prepare", help="read, clean and split a config's data and train its tokenizer into the run dir that "
                        "`tfllm train` with the same arguments then trains in",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_keys_help(),
    ), "tfllm.trainers.prepare")


def add_config_arguments(p, module_name):
    """train's arguments (a config, a run dir, overrides) for the program `module_name`: `tfllm
    prepare` takes the same, so that the run dir it prepares is the one train then finds."""
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML file or a name in configs/ (default: {DEFAULT_CONFIG})")
    p.add_argument("--run-dir", default=None, help="where the run is written (default: runs/<config name>)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(run=configured(module_name))


def add_generate(sub):
    p = sub.add_parser("generate", help="generate text from a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory written by `tfllm train`")
    prompts = p.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", action="append", help="prompt text (repeat for several)")
    prompts.add_argument("--prompts-file", help="a .txt file with one prompt per line, or .jsonl with 'prompt'")
    add_decoding_arguments(p)
    p.add_argument("--stream", action="store_true", help="print tokens as they are produced")
    p.add_argument("--chat", action="store_true",
                   help="send each prompt as a user message through the run's chat template and print the reply")
    add_key_file_argument(p, "the key file of a run whose checkpoints are encrypted (default: the run's "
                             "train.encrypt_key_file)")
    p.set_defaults(run=lazy("tfllm.trainers.generate"))


def add_decoding_arguments(p):
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per prompt")
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="sample", help="decoding strategy")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 means greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample inside the nucleus of this mass")
    p.add_argument("--num-beams", type=int, default=4, help="beams for --strategy beam")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop a completion at this string (repeat for several); end-of-text always stops")
    p.add_argument("--precision", choices=DECODING_PRECISIONS, default="float32",
                   help="the weights' precision while decoding: bfloat16 and int8 read fewer bytes per token, "
                        "at a small cost in quality (measure it with `tfllm evaluate --precision`)")


def add_key_file_argument(p, help):
    """--encrypt-key-file, the one name on every verb of the key file that encrypts weights at rest."""
    p.add_argument("--encrypt-key-file", default=None, metavar="KEY",
                   help=f"{help}; a key file holds 64 hex digits: `tfllm keygen --encrypt-key-file KEY`")


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a run on text, prompt/reference or labeled data",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory written by `tfllm train`")
    p.add_argument("--data", required=True,
                   help=".txt/.jsonl with 'text' (loss, perplexity, bits per byte), .jsonl with "
                        "'prompt' and 'reference' (BLEU, ROUGE) or, for a classify run, .jsonl with 'text' "
                        "and 'label' (accuracy, macro-F1)")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metrics to report (default: all that fit the data): loss perplexity "
                        "bits_per_byte bleu rouge accuracy macro_f1")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per evaluation batch")
    add_decoding_arguments(p)
    add_key_file_argument(p, "the key file of a run whose checkpoints are encrypted (default: the run's "
                             "train.encrypt_key_file)")
    p.set_defaults(run=lazy("tfllm.trainers.evaluate"), strategy="greedy")


def add_export(sub):
    p = sub.add_parser("export", help="write a SavedModel that takes strings and returns generated strings "
                                      "(or labels, for a classify run)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory written by `tfllm train`")
    p.add_argument("--out", required=True, help="export base directory (TF Serving layout: OUT/VERSION/)")
    p.add_argument("--version", type=int, default=None, help="version number (default: newest + 1)")
    p.add_argument("--force", action="store_true", help="overwrite an existing version")
    p.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="savedmodel",
                   help="savedmodel (text in, text out, for TF Serving) or huggingface (config.json, "
                        "model.safetensors and tokenizer files into --out, for transformers)")
    p.add_argument("--precision", choices=DECODING_PRECISIONS, default=None,
                   help="the weights' precision (default: float32): int8 stores the projections and embeddings "
                        "in int8, one scale per channel (a smaller SavedModel); bfloat16 every weight in "
                        "bfloat16 (fast where the device computes bfloat16 natively)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="int8: the same as --precision int8")
    p.add_argument("--adapters-only", action="store_true",
                   help="a LoRA run: write its adapters (and new head) alone into --out, to swap over one base")
    p.add_argument("--sign-key-file", default=None, metavar="KEY",
                   help="Ed25519 private key (PEM; `tfllm keygen` makes one): sign the export's manifest.json "
                        "into manifest.json.sig")
    add_key_file_argument(p, "encrypt the SavedModel's weights with this key file, and read an encrypted run's "
                             "checkpoints with it (default: the run's train.encrypt_key_file, whose export is "
                             "encrypted too)")
    p.set_defaults(run=lambda args: lazy("tfllm.export.adapters" if args.adapters_only
                                         else EXPORT_FORMATS[args.format])(args))


def add_import(sub):
    p = sub.add_parser("import", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="make a run directory of a Hugging Face checkpoint (GPT-2, Llama, Qwen2, Mistral, "
                            "BERT, BART, with their tokenizers)")
    p.add_argument("source", help="a checkpoint directory (config.json, model.safetensors, tokenizer files) "
                                  "or hf://ORG/NAME to download")
    p.add_argument("--run-dir", required=True, help="the new run directory")
    p.set_defaults(run=lazy("tfllm.trainers.import_checkpoint"))


def add_serve(sub):
    p = sub.add_parser("serve", help="serve an export with TF Serving's REST API",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="export base directory written by `tfllm export`")
    p.add_argument("--name", default=None, help="model name in URLs (default: the directory name)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; one other than loopback needs --api-key-file, or --insecure")
    p.add_argument("--port", type=port, default=8501, help="port to bind (0 picks a free one)")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="require 'Authorization: Bearer KEY' on every route, KEY one of this file's lines")
    p.add_argument("--insecure", action="store_true",
                   help="allow a --host other than loopback without --api-key-file: anyone who reaches it may call")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="PEM certificate (chain) to serve HTTPS with")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key of --tls-cert, unencrypted")
    p.add_argument("--access-log", default=None, metavar="FILE",
                   help="append one line per request to this file (default: stderr)")
    p.add_argument("--log-prompts", action="store_true",
                   help="show each request's texts, truncated, in the access log (default: never)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body accepted")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="most instances per request, and most prompts in one merged generate call")
    p.add_argument("--max-new-tokens", type=int, default=256, help="largest max_new_tokens accepted")
    p.add_argument("--batch-timeout-ms", type=milliseconds, default=DEFAULT_BATCH_TIMEOUT_MS,
                   help="how long a generate request waits for concurrent ones to share its call (0: no wait); "
                        "requests are merged only where every answer stays what it would be alone")
    p.add_argument("--num-batch-threads", type=thread_count, default=None,
                   help="how many merged generate calls run at once; a round's largest call is halved to keep "
                        "them busy (default: one per CPU core, 1 where a GPU is visible)")
    p.add_argument("--no-batching", action="store_true",
                   help="run every generate request in a call of its own, as soon as it arrives")
    add_key_file_argument(p, "the key file an encrypted export was written with; its weights are opened in "
                             "memory only")
    p.set_defaults(run=lazy("tfllm.export.server"))


def add_verify(sub):
    p = sub.add_parser("verify", help="check a run dir or an export against its manifest.json (and signature)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", help="a run dir, an export version, or an export base dir (every version)")
    p.add_argument("--public-key", default=None, metavar="PUB",
                   help="Ed25519 public key (PEM): also require manifest.json.sig to be its signature")
    p.set_defaults(run=lazy("tfllm.trainers.verify"))


def add_sign(sub):
    # A verb, not a train key: a run is signed once it is what its owner vouches for, and a key
    # path kept out of config.yaml stays out of the run's fingerprint and lineage.
    p = sub.add_parser("sign", help="sign the manifest.json of a run dir or an export (Ed25519)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", help="a run dir, an export version, or an export base dir (every version)")
    p.add_argument("--key-file", required=True, metavar="KEY", help="Ed25519 private key (PEM)")
    p.set_defaults(run=lazy("tfllm.trainers.sign"))


def add_keygen(sub):
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for tfllm sign / export --sign-key-file, or a key "
                                      "file for --encrypt-key-file",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=None, help="directory for a new signing_key.pem and signing_key.pub.pem")
    p.add_argument("--encrypt-key-file", default=None, metavar="KEY",
                   help="a new 256-bit key file (64 hex digits, mode 0600) for --encrypt-key-file and "
                        "train.encrypt_key_file; an existing file is never overwritten")
    p.set_defaults(run=lazy("tfllm.trainers.keygen"))


def lazy(module_name):
    """`run(args)` of a program module, imported only when its verb runs."""

    def run(args):
        import importlib

        return importlib.import_module(module_name).run(args)

    return run


def configured(module_name):
    """`run(args)` of a program that reads a config: `main(config, run_dir, written_keys)` of
    `module_name`, imported only once the config is valid, so that a config error answers before
    TensorFlow starts."""

    def run(args):
        import importlib

        from tfllm.config import load_config, written_keys

        path = resolve_config_path(args.config)
        config = load_config(path, args.overrides)
        name = os.path.splitext(os.path.basename(path))[0]
        run_dir = args.run_dir or os.path.join("runs", name)
        importlib.import_module(module_name).main(config, run_dir, written_keys(path, args.overrides))

    return run


def build_parser():
    parser = Parser(
        prog="tfllm", description="Train, evaluate, export and serve language models with TensorFlow and Keras."
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in (add_train, add_prepare, add_import, add_generate, add_evaluate, add_export, add_serve,
                add_verify, add_sign, add_keygen):
        add(sub)
    return parser


def main(argv=None):
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        # --help (0) or a refused command line (2), already printed.
        return e.code
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args.run(args)
    except UserError as e:
        print(f"tfllm {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"tfllm {args.verb}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"tfllm {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
