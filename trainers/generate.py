"""Generate text from a trained run.

    tfllm generate --run-dir runs/gpt-tiny --prompt "The with statement" --top-k 20 --seed 1
    tfllm generate --run-dir runs/gpt-tiny --prompt "def " --strategy greedy --stream
    tfllm generate --run-dir runs/gpt-tiny --prompts-file prompts.txt --strategy beam --num-beams 4

`--prompts-file` is a .txt file with one prompt per non-blank line, or a .jsonl file with a
"prompt" string per line. Each completion is printed after its prompt, then a line of dashes.
A prompt too long for the context keeps its last tokens (a warning says how many). Only
`causal_lm`, `sft` and `seq2seq` runs generate; a `classify` run is used with `tfllm evaluate`
or `tfllm export`. A `seq2seq` run reads each prompt as a source and prints its target alone
(a source too long for the encoder keeps its first tokens).

    tfllm generate --run-dir runs/qwen-sft --chat --prompt "What does the with statement do?"

`--chat` sends each prompt as the user message of a conversation rendered with the run's chat
template (`tfllm.data.chat`: an imported checkpoint's, else the default) and its assistant
prompt, special tokens as their ids, and prints the assistant's reply alone; the reply ends at
the end-of-text token or the token that ends the template's assistant turn.
"""

import json

from tfllm import tasks
from tfllm.data.chat import ChatTemplate
from tfllm.data.finetune_pipeline import encode_with_special_tokens, end_of_turn_id
from tfllm.data.readers import describe_json_error
from tfllm.errors import UserError
from tfllm.generator import Generator, cut_at_stop_strings
from tfllm.run import Run
from tfllm.samplers import get_sampler
from tfllm.samplers.validation import flag_error
from tfllm.files import read_user_file

SEPARATOR = "-" * 40


def make_sampler(strategy="sample", temperature=1.0, top_k=None, top_p=None, num_beams=4, seed=None):
    """The sampler of the command-line decoding settings; `UserError` names a bad flag."""
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "num_beams": num_beams, "seed": seed}
    for name, value in settings.items():
        # An unset flag is None: the setting keeps get_sampler's default.
        message = None if value is None else flag_error(name, value)
        if message:
            raise UserError(message)
    return get_sampler(strategy, **settings)


def check_max_new_tokens(max_new_tokens, max_length=None):
    """`UserError` unless 1 <= max_new_tokens < max_length (the run's context)."""
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} is invalid: generate at least 1 token")
    if max_length is not None and max_new_tokens >= max_length:
        raise UserError(
            f"--max-new-tokens {max_new_tokens} is too large for this run's {max_length}-token context; "
            f"pass at most {max_length - 1}"
        )


def generation_run(run_dir, encrypt_key_file=None):
    """The `Run` in `run_dir` (its encrypted checkpoints read with `encrypt_key_file`, else its
    config's); `UserError` unless its task generates text."""
    run = Run.open(run_dir, encrypt_key_file)
    task = run.task
    if not task.generates:
        generating = tasks.listed(tasks.names_of(lambda t: t.generates), "or")
        raise UserError(f"{run_dir} is a {task.name} run, which {task.summary} instead of generating text; "
                        f"tfllm generate needs a {generating} run (try: {task.next_step.format(run_dir=run_dir)})")
    return run


def read_prompts(path):
    """The prompts of a .txt (one per non-blank line) or .jsonl ("prompt" per line) file."""
    lines = read_user_file(path, "--prompts-file", "pass an existing UTF-8 file").splitlines()
    if not path.endswith(".jsonl"):
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = [_jsonl_prompt(line, f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise UserError(f"--prompts-file {path} holds no prompts; write one prompt per line")
    return prompts


def _jsonl_prompt(line, where):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f'{where} is not valid JSON ({describe_json_error(e)}); write {{"prompt": "..."}}') from None
    except (ValueError, RecursionError):
        raise UserError(f'{where} is not JSON that can be read (nested too deeply or a number too long); '
                        'write {"prompt": "..."}') from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise UserError(f'{where} has no "prompt" string; each line needs {{"prompt": "..."}}')
    return record["prompt"]


def run(args):
    prompts = args.prompt if args.prompt else read_prompts(args.prompts_file)
    main(
        args.run_dir, prompts, max_new_tokens=args.max_new_tokens, strategy=args.strategy,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, num_beams=args.num_beams,
        seed=args.seed, stream=args.stream, stop_strings=tuple(getattr(args, "stop", None) or ()),
        chat=getattr(args, "chat", False), precision=getattr(args, "precision", "float32"),
        encrypt_key_file=getattr(args, "encrypt_key_file", None),
    )


def main(run_dir, prompts, max_new_tokens=64, strategy="sample", temperature=1.0, top_k=None, top_p=None,
         num_beams=4, seed=None, stream=False, stop_strings=(), chat=False, precision="float32",
         encrypt_key_file=None):
    """Print a completion of every prompt with the run's model, its weights in `precision`
    (`tfllm.precision.for_decoding`); with `chat`, the assistant's reply to each prompt as a user
    message (`chat_replies`). Encrypted checkpoints are read with `encrypt_key_file`, else the
    run's `train.encrypt_key_file`."""
    check_max_new_tokens(max_new_tokens)
    sampler = make_sampler(strategy, temperature, top_k, top_p, num_beams, seed)
    if stream and strategy == "beam":
        raise UserError("--stream works with --strategy greedy or sample: beam search ranks its beams at the end")
    if stream and chat:
        raise UserError("--stream does not work with --chat yet; drop --stream to print each reply whole")
    run = generation_run(run_dir, encrypt_key_file)
    if chat and run.task.encoder_decoder:
        raise UserError(f"{run_dir} is a {run.task.name} run, which has no chat template; --chat needs a causal_lm "
                        "or sft run")
    model, _ = run.load_servable_model(precision)
    check_max_new_tokens(max_new_tokens, run.config.max_seq_len)
    generator = Generator(model, run.tokenizer, max_length=run.config.max_seq_len)
    if chat:
        for reply in chat_replies(generator, list(prompts), max_new_tokens, sampler, stop_strings):
            print(reply)
            print(SEPARATOR)
        return
    # A continuation follows its prompt; an encoder-decoder's target stands alone.
    shown = (lambda prompt: "") if run.task.encoder_decoder else (lambda prompt: prompt)
    if not stream:
        completions = generator.generate(list(prompts), max_new_tokens, sampler, stop_strings=stop_strings)
        for prompt, completion in zip(prompts, completions):
            print(f"{shown(prompt)}{completion}")
            print(SEPARATOR)
        return
    for prompt in prompts:
        print(shown(prompt), end="", flush=True)
        generator.generate([prompt], max_new_tokens, sampler, stop_strings=stop_strings,
                           on_text=lambda row, piece: print(piece, end="", flush=True))
        print()
        print(SEPARATOR)



def chat_prompt_ids(tokenizer, prompts):
    """The ids of each prompt as the one user message of a conversation, rendered with the
    tokenizer's chat template and its assistant prompt, special tokens as their ids."""
    template = ChatTemplate.of(tokenizer)
    texts = [template.render([{"role": "user", "content": prompt}], add_generation_prompt=True, where=f"prompt {n}")
             for n, prompt in enumerate(prompts, start=1)]
    return encode_with_special_tokens(tokenizer, texts)


def chat_replies(generator, prompts, max_new_tokens, sampler, stop_strings=()):
    """The assistant's reply to each prompt (`chat_prompt_ids`), up to the end-of-text id or the
    template's end-of-turn token (`end_of_turn_id`) and the first of `stop_strings`."""
    tokenizer = generator.tokenizer
    stops = tuple(dict.fromkeys(id for id in (tokenizer.eos_id, end_of_turn_id(ChatTemplate.of(tokenizer), tokenizer))
                                if id is not None))
    ids = generator.generate_from_ids(chat_prompt_ids(tokenizer, prompts), max_new_tokens, sampler,
                                      stop_token_ids=stops)
    return [cut_at_stop_strings(text, stop_strings) for text in generator.detokenize(ids)]
