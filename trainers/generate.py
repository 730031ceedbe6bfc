"""Generate text from a trained run.

    tfllm generate --run-dir runs/gpt-tiny --prompt "The with statement" --top-k 20 --seed 1
"""

from tfllm import runs
from tfllm.errors import UserError
from tfllm.generator import Generator
from tfllm.samplers import get_sampler


def make_sampler(temperature, top_k, seed):
    """Simple sampling: greedy at temperature 0, else random, optionally among the top k."""
    try:
        if temperature == 0:
            return get_sampler("greedy")
        return get_sampler("sample", temperature=temperature, top_k=top_k or None, seed=seed)
    except ValueError as e:
        raise UserError(str(e).replace("Received:", "received:") + "; pass a valid value")


def run(args):
    main(args.run_dir, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed)


def main(run_dir, prompts, max_new_tokens=64, temperature=1.0, top_k=0, seed=None):
    sampler = make_sampler(temperature, top_k, seed)
    config, tokenizer, model, checkpoint = runs.load_run(run_dir)
    limit = config.max_seq_len - 1
    if not 1 <= max_new_tokens <= limit:
        raise UserError(f"--max-new-tokens={max_new_tokens} must be between 1 and {limit} for this run's "
                        f"{config.max_seq_len}-token context")
    generator = Generator(model, tokenizer, max_length=config.max_seq_len)
    for prompt, completion in zip(prompts, generator.generate(list(prompts), max_new_tokens, sampler)):
        print(f"{prompt}{completion}")
        print("-" * 40)
