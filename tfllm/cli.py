"""The `tfllm` command. Programs are imported lazily so `tfllm --help` answers at once.

A `UserError` (bad input a user can fix) prints one line on stderr and exits with code 2.
"""

import argparse
import os
import sys

from tfllm.errors import UserError

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = "gpt-tiny"


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
    p = sub.add_parser(
        "train", help="train a model from a YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_keys_help(),
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML file or a name in configs/ (default: {DEFAULT_CONFIG})")
    p.add_argument("--run-dir", default=None, help="where the run is written (default: runs/<config name>)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(run=run_train)


def add_generate(sub):
    p = sub.add_parser("generate", help="generate text from a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a run directory written by `tfllm train`")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 means greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens; 0 = all")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")
    p.set_defaults(run=run_generate)


def run_train(args):
    from tfllm.config import load_config
    from trainers import causal_lm

    path = resolve_config_path(args.config)
    config = load_config(path, args.overrides)
    name = os.path.splitext(os.path.basename(path))[0]
    run_dir = args.run_dir or os.path.join("runs", name)
    model, tokenizer = causal_lm.train(config, run_dir)
    causal_lm.print_samples(config, model, tokenizer)
    print(f"Run written to {run_dir}; try: tfllm generate --run-dir {run_dir} --prompt 'The '")


def run_generate(args):
    from trainers import generate

    generate.main(
        run_dir=args.run_dir, prompts=args.prompt, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, seed=args.seed,
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="tfllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_train(sub)
    add_generate(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args.run(args)
    except UserError as e:
        print(f"tfllm {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfllm {args.verb}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
