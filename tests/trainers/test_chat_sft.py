"""`model.task: sft` on chat lines and `tfllm generate --chat`, end to end from the session's tiny
causal LM (`causal_lm_run`) with a chat template of its own in its tokenizer/."""

import json
import os
import shutil

import numpy as np
import pytest

from tfllm import cli, config as config_lib
from tfllm.data.training_data import sft_data
from tfllm.generator import Generator
from tfllm.run import Run
from tfllm.tasks import TASKS
from tfllm.trainers.generate import chat_replies
from tfllm.trainers.prepare_data import read_examples

# Role initials (characters of the run's vocabulary) and the end-of-text token ending each turn,
# as a chat template writes it; a conversation fits the run's 32-token context.
TEMPLATE = ("{% for m in messages %}{{ m['role'][0] + ':' + m['content'] + eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'a:' }}{% endif %}")
CONVERSATIONS = [
    [{"role": "user", "content": f"{i}+{i}"}, {"role": "assistant", "content": f"{2 * i}"},
     {"role": "user", "content": "x2"}, {"role": "assistant", "content": f"{4 * i}"}]
    for i in range(12)
]
PAIRS = [{"prompt": f"say {i}", "completion": f" {i}"} for i in range(4)]


def train(argv):
    return cli.main(["train", *argv])


def sft_argv(directory, pretrained, data):
    config = directory / "sft.yaml"
    config.write_text("model:\n  task: sft\n")  # the pretrained run gives the shape and the tokenizer
    return ["--config", str(config), "--run-dir", str(directory / "run"), f"data.path={data}",
            f"train.init_from={pretrained}", "data.val_fraction=0.25", "train.batch_size=4", "train.steps=2",
            "train.eval_every=2", "train.eval_batches=1", "train.log_every=1", "train.warmup_steps=0",
            "train.samples=0", "train.precision=float32"]


@pytest.fixture(scope="module")
def pretrained(causal_lm_run, tmp_path_factory):
    """A copy of the session's causal LM whose tokenizer/ holds `TEMPLATE`."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    shutil.copytree(causal_lm_run, run_dir)
    (run_dir / "tokenizer" / "chat_template.jinja").write_text(TEMPLATE)
    return str(run_dir)


@pytest.fixture(scope="module")
def chat_run(pretrained, tmp_path_factory):
    directory = tmp_path_factory.mktemp("chat_sft")
    data = directory / "chat.jsonl"
    lines = [{"messages": conversation} for conversation in CONVERSATIONS] + PAIRS
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert train(sft_argv(directory, pretrained, data)) == 0
    return str(directory / "run")


def test_chat_lines_train_with_the_pretrained_runs_template_on_assistant_turns_only(chat_run, one_device_strategy):
    run = Run.open(chat_run)
    assert run.tokenizer.chat_template == TEMPLATE  # carried over by train.init_from
    losses = [record["loss"] for record in map(json.loads, open(os.path.join(chat_run, "metrics.jsonl")))
              if "loss" in record]
    assert len(losses) == 2 and np.isfinite(losses).all()
    # The batches the run trained on: each conversation in the template's text, weighing the
    # assistant turns and their end-of-text token, nothing else.
    config = config_lib.load_config(os.path.join(chat_run, "config.yaml"))
    examples = read_examples(config, TASKS["sft"])
    tokenizer = run.tokenizer

    def ids(text):
        return [int(id) for id in tokenizer.tokenize(text).numpy()]

    x, y, weights = next(iter(sft_data(config, examples, tokenizer, one_device_strategy).val_ds))
    assert {example[1] is None for example in examples.val} == {True, False}  # conversations and pairs
    for row, example in enumerate(examples.val[: len(y)]):
        learned = [int(id) for id in np.asarray(y[row])[np.asarray(weights[row]) == 1.0]]
        if example[1] is not None:  # a prompt -> completion line keeps its layout
            assert list(x["token_ids"][row][:2]) == [tokenizer.start_id, *ids(example[0])][:2]
            assert learned == [*ids(example[1]), tokenizer.eos_id]
            continue
        first, second = (m["content"] for m in example[0] if m["role"] == "assistant")
        eos = tokenizer.eos_id
        text = [*ids(f"u:{example[0][0]['content']}"), eos, *ids(f"a:{first}"), eos, *ids("u:x2"), eos,
                *ids(f"a:{second}")]
        np.testing.assert_array_equal(x["token_ids"][row][: len(text)], text)
        assert learned == [*ids(first), eos, *ids(second), eos]


def test_generate_chat_sends_the_template_and_prints_the_reply(chat_run, capsys, monkeypatch):
    sent = []
    generate_from_ids = Generator.generate_from_ids

    def recording(self, prompt_ids, *args, **kwargs):
        sent.append(prompt_ids)
        sent.append(kwargs["stop_token_ids"])
        return generate_from_ids(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(Generator, "generate_from_ids", recording)
    args = ["generate", "--run-dir", chat_run, "--chat", "--prompt", "1+1", "--prompt", "hi", "--strategy",
            "greedy", "--max-new-tokens", "5"]
    assert cli.main(args) == 0
    tokenizer = Run.open(chat_run).tokenizer

    def ids(text):
        return [int(id) for id in tokenizer.tokenize(text).numpy()]

    # The template's text: the end-of-text token it writes is its id, not the characters of "<eos>".
    assert sent[0] == [ids("u:1+1") + [tokenizer.eos_id] + ids("a:"), ids("u:hi") + [tokenizer.eos_id] + ids("a:")]
    assert sent[1] == (tokenizer.eos_id,)
    replies = capsys.readouterr().out.split("-" * 40 + "\n")
    assert len(replies) == 3 and replies[-1] == "" and not any("u:" in reply for reply in replies)


def test_a_reply_stops_at_the_token_that_ends_the_templates_assistant_turn(chat_run):
    """A template may end a turn with a special token other than the end of text (Qwen2's
    <|im_end|>, Llama 3's <|eot_id|>): the reply stops at either, and at a stop string."""
    tokenizer = Run.open(chat_run).tokenizer
    tokenizer.chat_template = TEMPLATE.replace("eos_token", "'<mask>'")

    class Recorder:
        def generate_from_ids(self, prompt_ids, max_new_tokens, sampler, stop_token_ids):
            self.prompt_ids, self.stop_token_ids = prompt_ids, stop_token_ids
            return [[5, 6]]

        def detokenize(self, ids):
            return ["reply. STOP more"]

    generator = Recorder()
    generator.tokenizer = tokenizer
    assert chat_replies(generator, ["hi"], 4, None, stop_strings=("STOP",)) == ["reply. "]
    assert generator.stop_token_ids == (tokenizer.eos_id, tokenizer.mask_id)
    assert generator.prompt_ids == [[*tokenizer.tokenize("u:hi").numpy(), tokenizer.mask_id,
                                     *tokenizer.tokenize("a:").numpy()]]


@pytest.mark.parametrize("line, expected", [
    ({"messages": [{"role": "bot", "content": "hi"}]},
     '{data}:2: message 1 has "role" "bot"; a role is "system", "user" or "assistant".'),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 4}]},
     '{data}:2: message 2: "content" is an integer 4; it must be a string.'),
])
def test_a_bad_chat_line_is_one_error_line_and_exit_code_2(pretrained, tmp_path, capsys, line, expected):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATIONS[0]}) + "\n" + json.dumps(line) + "\n")
    capsys.readouterr()
    assert train(sft_argv(tmp_path, pretrained, data)) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"tfllm train: error: {expected.format(data=data)}"]


def test_chat_does_not_stream(chat_run, capsys):
    assert cli.main(["generate", "--run-dir", chat_run, "--chat", "--stream", "--prompt", "hi"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "tfllm generate: error: --stream does not work with --chat yet; drop --stream to print each reply whole"]
