"""`tfllm generate` end to end on the session's tiny trained run (`causal_lm_run`)."""

import contextlib
import io
import logging
import os
import shutil

import pytest

from tests.trainers.run_testing import CAUSAL_LM_CONTEXT as CONTEXT
from tfllm import cli
from tfllm.generator import Generator
from tfllm.samplers import GreedySampler
from tfllm.run import Run


@pytest.fixture(scope="module")
def run_dir(causal_lm_run):
    return causal_lm_run


def generate(run_dir, *args):
    return cli.main(["generate", "--run-dir", run_dir, *args])


def completions(output):
    """The printed blocks: each completion with its prompt, before a line of dashes."""
    return [block.strip("\n") for block in output.split("-" * 40 + "\n")[:-1]]


GREEDY = ["--prompt", "the", "--prompt", "a d", "--strategy", "greedy", "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def greedy_output(run_dir):
    """What `tfllm generate GREEDY` prints, for the tests that read it."""
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert generate(run_dir, *GREEDY) == 0
    return console.getvalue()


def test_prints_each_prompt_with_its_greedy_completion(run_dir, greedy_output):
    run = Run.open(run_dir)
    tokenizer = run.tokenizer
    model, _ = run.load_model()
    expected = Generator(model, tokenizer, CONTEXT).generate(["the", "a d"], 6, GreedySampler())
    assert completions(greedy_output) == ["the" + expected[0], "a d" + expected[1]]


def test_streamed_output_equals_the_printed_completion(run_dir, greedy_output, capsys):
    assert generate(run_dir, *GREEDY, "--stream") == 0
    assert capsys.readouterr().out == greedy_output


@pytest.mark.parametrize("strategy", [["--top-k", "5"], ["--top-p", "0.9"], ["--strategy", "beam", "--num-beams", "3"]])
def test_the_same_seed_prints_the_same_text(run_dir, capsys, strategy):
    args = ["--prompt", "the", "--max-new-tokens", "8", "--seed", "3", *strategy]
    assert generate(run_dir, *args) == 0
    first = capsys.readouterr().out
    assert generate(run_dir, *args) == 0
    assert capsys.readouterr().out == first and first.startswith("the") and len(first.splitlines()[0]) > len("the")


@pytest.mark.parametrize("suffix, content", [
    (".txt", "the\n\na d\n"),
    (".jsonl", '{"prompt": "the"}\n{"prompt": "a d", "id": 2}\n'),
])
def test_prompts_file(run_dir, tmp_path, capsys, suffix, content):
    path = tmp_path / f"prompts{suffix}"
    path.write_text(content, encoding="utf-8")
    assert generate(run_dir, "--prompts-file", str(path), "--strategy", "greedy", "--max-new-tokens", "4") == 0
    printed = completions(capsys.readouterr().out)
    assert len(printed) == 2 and printed[0].startswith("the") and printed[1].startswith("a d")


def test_a_prompt_longer_than_the_context_keeps_its_end_with_a_warning(run_dir, capsys, caplog):
    prompt = "the cat sat on the mat " * 3  # 69 characters, longer than the context
    assert len(prompt) + 1 > CONTEXT
    with caplog.at_level(logging.WARNING, logger="tfllm.generator"):
        assert generate(run_dir, "--prompt", prompt, "--strategy", "greedy", "--max-new-tokens", "4") == 0
    expected = (f"has 70 tokens; keeping its last {CONTEXT - 4} to leave room for 4 new tokens in the "
                f"{CONTEXT}-token context")
    assert expected in caplog.text
    assert completions(capsys.readouterr().out)[0].startswith(prompt)


def test_a_run_dir_without_checkpoint_is_refused(causal_lm_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(causal_lm_run, run_dir)
    for name in os.listdir(os.path.join(run_dir, "checkpoints")):
        os.rename(os.path.join(run_dir, "checkpoints", name), os.path.join(run_dir, name))
    assert generate(run_dir, "--prompt", "x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run_dir} has no checkpoint under checkpoints/" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens 0 is invalid: generate at least 1 token"),
        (["--max-new-tokens", str(CONTEXT)],
         f"--max-new-tokens {CONTEXT} is too large for this run's {CONTEXT}-token context"),
        (["--temperature", "-0.5"], "--temperature -0.5 is invalid: temperature must be a number >= 0"),
        (["--top-p", "0"], "--top-p 0.0 is invalid: top_p must be a number with 0 < top_p <= 1"),
        (["--top-p", "1.5"], "--top-p 1.5 is invalid"),
        (["--top-k", "0"], "--top-k 0 is invalid: top_k must be an integer >= 1"),
        (["--num-beams", "0"], "--num-beams 0 is invalid: num_beams must be an integer >= 1"),
        (["--strategy", "beam", "--stream"], "--stream works with --strategy greedy or sample"),
    ],
)
def test_bad_decoding_settings_are_one_line_errors(run_dir, capsys, args, message):
    assert generate(run_dir, "--prompt", "the", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfllm generate: error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n', 'p.jsonl:2 has no "prompt" string'),
        ("p.jsonl", '{"prompt": "a"}\n\n{"prompt": \n', "p.jsonl:3 is not valid JSON"),
        ("p.txt", "\n\n", "holds no prompts"),
    ],
)
def test_bad_prompts_files_name_the_file_and_line(run_dir, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert generate(run_dir, "--prompts-file", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_missing_prompts_file(run_dir, tmp_path, capsys):
    assert generate(run_dir, "--prompts-file", str(tmp_path / "none.txt")) == 2
    assert "cannot read --prompts-file" in capsys.readouterr().err


def test_prompt_and_prompts_file_are_exclusive(run_dir, capsys):
    assert generate(run_dir, "--prompt", "a", "--prompts-file", "prompts.txt") == 2
    err = capsys.readouterr().err.strip()
    assert "not allowed with argument" in err and "\n" not in err, err


# bfloat16 only: int8's generation is compared in tests/export and tests/trainers/test_lora.py.
@pytest.mark.parametrize("precision", ["bfloat16"])
def test_a_decoding_precision_prints_the_completion_of_its_rounded_model(run_dir, capsys, precision):
    assert generate(run_dir, "--prompt", "the", "--strategy", "greedy", "--max-new-tokens", "6",
                    "--precision", precision) == 0
    model, _ = Run.open(run_dir).load_servable_model(precision)
    expected = Generator(model, Run.open(run_dir).tokenizer, CONTEXT).generate(["the"], 6, GreedySampler())
    assert completions(capsys.readouterr().out) == ["the" + expected[0]]
