"""Bad input, verb by verb: one line on stderr, exit code 2 (or an HTTP 4xx), nothing overwritten.

Every row of `CASES` runs one `tfllm` command in-process on a mistake a user can make (a wrong
config key, an unreadable data file, a prompt file with a broken line, an export over an
existing version...). Each must answer with exactly one stderr line
`tfllm VERB: error: ...` that names what was wrong, exit code 2, no traceback, and leave every
file that existed before it (the shared run, its export, the case's own files) byte for byte
as it was. `REQUESTS` does the same for the REST API of `tfllm serve`: an HTTP 4xx with a
JSON `{"error": ...}` naming the problem.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from werkzeug.test import Client

from tfllm.export.rest_api import RestApi
from tfllm.export.server import load_servable
from tests.trainers.run_testing import CAUSAL_LM_CONTEXT as CONTEXT
from tests.trainers.run_testing import CAUSAL_LM_RUN, CAUSAL_LM_STEPS
from tests.trainers.run_testing import corpus, tiny  # noqa: F401  `corpus` is a fixture used below
from tfllm import cli

SERVE_LIMITS = {"max_body_bytes": 4096, "max_batch_size": 4, "max_new_tokens": 8}


@dataclasses.dataclass(frozen=True)
class Env:
    """What every case may point at: the tiny corpus, the session's trained causal run
    (`causal_lm_run`) and its export."""

    corpus: str
    run: str
    export: str


@pytest.fixture(scope="module")
def env(corpus, causal_lm_run, causal_lm_export):  # noqa: F811  the fixture imported above
    return Env(corpus=corpus, run=causal_lm_run, export=causal_lm_export)


def write(directory, name, content):
    """Write `content` (str as UTF-8, or bytes) to `directory/name`; returns the path."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def mkdir(directory, name):
    path = os.path.join(directory, name)
    os.mkdir(path)
    return path


def jsonl(*records):
    """JSON Lines of `records`; a str record is written as is (a broken line)."""
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def texts(n, **fields):
    """`n` classification records `{"text": ..., **fields}` with distinct texts."""
    return [{"text": f"example number {i} of the data", **fields} for i in range(n)]


def snapshot(*roots):
    """SHA-256 of every file below `roots`."""
    digests = {}
    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    digests[path] = hashlib.sha256(f.read()).hexdigest()
    return digests


# ---------------------------------------------------------------------------------------------
# The table. Each row: (argv builder, substring the error line must hold). A builder gets the
# shared `Env` and the case's own empty directory `d`, writes the files the case needs there
# and returns the command line. In the expected substring, {d} {run} {export} {corpus} stand
# for those paths.
# ---------------------------------------------------------------------------------------------


def train(d, env, config=None, **changes):
    """`tfllm train` of the tiny config into `d/run`, with `changes` (section__key) applied."""
    argv = ["train", "--run-dir", os.path.join(d, "run")]
    if config:
        argv += ["--config", config]
    return argv + tiny(env.corpus, **changes)


def classify(d, env, train_records, val_records=None, **changes):
    """A classify run from scratch on `train_records` (and `val_records` as data.val_path)."""
    changes = {"model__task": "classify", "data__path": write(d, "train.jsonl", jsonl(*train_records)),
               "data__blank_line_documents": "false", **changes}
    if val_records is not None:
        changes["data__val_path"] = write(d, "val.jsonl", jsonl(*val_records))
    return train(d, env, **changes)


def untrained_copy(env, d):
    """A run dir with the shared run's config and tokenizer but no checkpoint."""
    run = os.path.join(d, "run")
    os.makedirs(run)
    shutil.copy(os.path.join(env.run, "config.yaml"), run)
    shutil.copytree(os.path.join(env.run, "tokenizer"), os.path.join(run, "tokenizer"))
    return run


def damaged_copy(env, d, name, content):
    """A copy of the shared run in `d/run` whose file `name` holds `content` instead."""
    run = os.path.join(d, "run")
    shutil.copytree(env.run, run)
    write(run, name, content)
    return run


def edited_copy(env, d, old, new):
    """A copy of the shared run in `d/run` whose config.yaml has `old` replaced by `new`."""
    run = damaged_copy(env, d, "config.yaml", b"")
    with open(os.path.join(env.run, "config.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert old in text
    write(run, "config.yaml", text.replace(old, new))
    return run


def case(build, expected, id):
    return pytest.param(build, expected, id=id)


CONFIG_CASES = [
    case(lambda env, d: train(d, env, model__hiden_dim=16),
         "unknown key 'model.hiden_dim'; did you mean 'model.hidden_dim'?", "config-unknown-key-override"),
    case(lambda env, d: train(d, env, config=write(d, "c.yaml", "model:\n  num_layer: 2\n")),
         "{d}/c.yaml: unknown key 'model.num_layer'", "config-unknown-key-in-file"),
    case(lambda env, d: train(d, env, train__steps="many"),
         "train.steps must be int, got 'many'", "config-wrong-type"),
    case(lambda env, d: train(d, env, train__batch_size=-8),
         "override 'train.batch_size=-8': train.batch_size=-8 is invalid: use a positive integer",
         "config-negative-batch-size"),
    case(lambda env, d: train(d, env, train__learning_rate=".inf"),
         "override 'train.learning_rate=.inf': train.learning_rate=inf is not a finite number",
         "config-infinite-learning-rate"),
    case(lambda env, d: train(d, env, train__steps=0), "train.steps=0 is invalid", "config-zero-steps"),
    case(lambda env, d: train(d, env, distribute__strategy="bogus"),
         "distribute.strategy='bogus' is invalid: use one of auto,", "config-unknown-strategy"),
    case(lambda env, d: train(d, env, data__tokenizer="morse"),
         "data.tokenizer='morse' is invalid: use one of char,", "config-unknown-tokenizer"),
    case(lambda env, d: train(d, env, model__task="masked_lm", data__mask_rate=1.5),
         "data.mask_rate=1.5 is invalid: use a value in (0, 1)", "config-mask-rate-1.5"),
    case(lambda env, d: train(d, env, config=os.path.join(d, "missing.yaml")),
         "config {d}/missing.yaml not found", "config-missing-file"),
    case(lambda env, d: train(d, env, config=d), "config file {d} cannot be read (Is a directory)",
         "config-is-a-directory"),
    case(lambda env, d: train(d, env, config=write(d, "c.yaml", "model: [1, 2\ntrain: {}\n")),
         "{d}/c.yaml (line 2): not valid YAML", "config-invalid-yaml"),
    case(lambda env, d: train(d, env, config=write(d, "c.yaml", b"\xff\xfe\x00m\x00o")),
         "{d}/c.yaml (not UTF-8): not valid YAML", "config-binary-file"),
]

DATA_CASES = [
    case(lambda env, d: train(d, env, data__path=write(d, "empty.txt", "")),
         "Corpus '{d}/empty.txt' is empty after cleaning", "data-empty-txt"),
    case(lambda env, d: train(d, env, data__path=write(d, "model.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")),
         "{d}/model.txt looks binary (NUL byte at byte offset 8)", "data-binary-file"),
    case(lambda env, d: train(d, env, data__path=write(d, "latin1.txt", "caf\u00e9 au lait ".encode("latin-1") * 9)),
         "{d}/latin1.txt is not valid UTF-8 at byte offset 3", "data-invalid-utf8"),
    # A single 10 MB line is one document in a .txt (accepted, as any long document); in a
    # .jsonl it must be one JSON object, and a 10 MB line of plain text is not.
    case(lambda env, d: train(d, env, data__path=write(d, "big.jsonl", "word " * (2 << 20))),
         "{d}/big.jsonl:1 is not valid JSON", "data-10mb-line-not-json"),
    # The line ends inside a string: its newline is the control character.
    case(lambda env, d: train(d, env, data__path=write(d, "c.jsonl", jsonl({"text": "a" * 40}) + '{"text": "b\n')),
         "{d}/c.jsonl:2 is not valid JSON (Invalid control character at column 12)", "data-jsonl-malformed-line"),
    case(lambda env, d: train(d, env, data__path=write(d, "c.jsonl", jsonl({"body": "no text field here"}))),
         '{d}/c.jsonl:1 has no "text" field', "data-jsonl-without-text"),
    case(lambda env, d: train(d, env, data__path=os.path.join(d, "nowhere.txt")),
         "Corpus path '{d}/nowhere.txt' does not exist", "data-nonexistent-path"),
    case(lambda env, d: train(d, env, data__path=mkdir(d, "empty_dir")),
         "Directory '{d}/empty_dir' contains no .txt, .md, .jsonl files", "data-empty-directory"),
]

TOKENIZER_CASES = [
    case(lambda env, d: train(d, env, data__tokenizer="bpe", data__vocab_size=100),
         "data.vocab_size=100 is too small for the bpe tokenizer: it needs at least 260", "tokenizer-bpe-vocab-small"),
    case(lambda env, d: train(d, env, data__tokenizer="sentencepiece", data__vocab_size=64),
         "data.vocab_size=64 is too small for the sentencepiece tokenizer", "tokenizer-sp-vocab-small"),
    case(lambda env, d: ["evaluate", "--run-dir", damaged_copy(env, d, "tokenizer/code_points.json", b"[1, 2"),
                         "--data", env.corpus],
         "Tokenizer directory {d}/run/tokenizer is corrupt: {d}/run/tokenizer/code_points.json is not valid JSON",
         "tokenizer-corrupt-in-run-dir"),
]

TRAINING_CASES = [
    case(lambda env, d: train(d, env, train__batch_size=8, train__grad_accum_steps=3),
         "train.batch_size=8 does not divide into 1 replica(s) x 3 accumulation step(s)", "train-grad-accum"),
    case(lambda env, d: train(d, env, model__max_seq_len=8),
         "model.seq_len=16 is invalid: it is larger than model.max_seq_len=8", "train-seq-len-over-max"),
    case(lambda env, d: train(d, env, data__val_fraction=1e-6),
         "The validation split of '{corpus}' is empty: none of its 300 documents fell in data.val_fraction=1e-06",
         "train-val-split-empty"),
    case(lambda env, d: train(d, env, data__val_fraction=0.02, train__batch_size=128),
         "the validation split has fewer than train.batch_size x (model.seq_len + 1) = 2176 tokens",
         "train-val-split-too-small"),
    case(lambda env, d: ["train", "--run-dir", write(d, "run", "a file"), *tiny(env.corpus)],
         "cannot create run dir {d}/run", "train-run-dir-is-a-file"),
    case(lambda env, d: ["train", "--run-dir", env.run, *CAUSAL_LM_RUN, "model.hidden_dim=32"],
         "{run} holds a run with another config (model.hidden_dim=16 -> 32)", "train-resume-changed-config"),
]

FINETUNE_CASES = [
    case(lambda env, d: classify(d, env, [*texts(9, label="a"), {"text": "unlabeled"}]),
         '{d}/train.jsonl:10: no "label" key', "classify-label-missing"),
    case(lambda env, d: classify(d, env, texts(3, label="a") + ['{"text": "x", "label": "a",']),
         '{d}/train.jsonl:4: not valid JSON (Expecting property name enclosed in double quotes at column 28)',
         "classify-malformed-line"),
    case(lambda env, d: classify(d, env, [*texts(3, label="a"), *texts(3, label=1)]),
         "labels mix str and int: {d}/train.jsonl:4 has 1", "classify-mixed-label-types"),
    case(lambda env, d: classify(d, env, texts(8, label="a") + texts(8, label="b"), texts(2, label="c")),
         "label 'c' at {d}/val.jsonl:1 does not occur in the training data", "classify-label-only-in-val"),
    case(lambda env, d: train(d, env, train__init_from=d),
         "train.init_from={d}: {d}/config.yaml is missing; {d} is not a tfllm run dir", "init-from-not-a-run"),
    case(lambda env, d: train(d, env, model__task="masked_lm", train__init_from=env.run),
         "train.init_from={run} is a causal_lm run; a masked_lm run starts from masked_lm runs only",
         "init-from-other-task"),
    case(lambda env, d: classify(d, env, texts(8, label="a") + texts(8, label="b"), train__init_from=env.run,
                                 model__hidden_dim=32),
         "train.init_from={run} has another shape or tokenizer: model.hidden_dim=32 (pretrained: 16)",
         "init-from-other-shape"),
    case(lambda env, d: train(d, env, model__task="sft", data__blank_line_documents="false",
                              data__path=write(d, "sft.jsonl", jsonl({"prompt": "p", "completion": 3}))),
         '{d}/sft.jsonl:1: "completion" is an integer 3; it must be a string', "sft-completion-not-string"),
    case(lambda env, d: train(d, env, model__task="seq2seq", data__blank_line_documents="false",
                              data__path=write(d, "pairs.jsonl", jsonl({"source": "a", "target": "b"},
                                                                       {"target": "c"}))),
         '{d}/pairs.jsonl:2: no "source" key', "seq2seq-source-missing"),
    case(lambda env, d: train(d, env, model__task="seq2seq", data__blank_line_documents="false",
                              data__path=write(d, "pairs.tsv", "a\tb\nc d\n")),
         "{d}/pairs.tsv:2: no tab", "seq2seq-tsv-line-without-a-tab"),
    case(lambda env, d: train(d, env, model__task="seq2seq", data__blank_line_documents="false",
                              data__path=write(d, "pairs.tsv", "a\tb\tc\n")),
         "{d}/pairs.tsv:1: 2 tabs", "seq2seq-tsv-line-with-two-tabs"),
]

GENERATE_CASES = [
    case(lambda env, d: ["generate", "--run-dir", os.path.join(d, "gone"), "--prompt", "The "],
         "run dir {d}/gone does not exist", "generate-run-dir-missing"),
    # A prompt longer than the context is cut from the left with a warning, by design; asking
    # for more new tokens than the whole context holds is the error.
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompt", "The " * 40, "--max-new-tokens", "64"],
         f"--max-new-tokens 64 is too large for this run's {CONTEXT}-token context", "generate-longer-than-context"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompt", "The ", "--max-new-tokens", "-3"],
         "--max-new-tokens -3 is invalid", "generate-negative-max-new-tokens"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompt", "The ", "--strategy", "nucleus"],
         "argument --strategy: invalid choice: 'nucleus'", "generate-unknown-strategy"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompts-file",
                         write(d, "p.jsonl", jsonl({"prompt": "ok"}) + "{prompt: no quotes}\n")],
         "{d}/p.jsonl:2 is not valid JSON", "generate-prompts-file-malformed-line"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompts-file",
                         write(d, "p.jsonl", '{"prompt": "a\tb"}\n')],
         "{d}/p.jsonl:1 is not valid JSON (Invalid control character at column 14)",
         "generate-prompts-file-control-character"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompts-file", write(d, "p.txt", b"\x89PNG\xff\x00")],
         "--prompts-file {d}/p.txt is not UTF-8 text", "generate-prompts-file-binary"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompt", "x", "--top-p", "1.5"],
         "--top-p 1.5 is invalid", "generate-top-p-out-of-range"),
    case(lambda env, d: ["generate", "--run-dir", env.run, "--prompt", "x", "--max-new-tokens", "ten"],
         "argument --max-new-tokens: invalid int value: 'ten'", "generate-max-new-tokens-not-int"),
    case(lambda env, d: ["generate", "--run-dir", damaged_copy(env, d, f"checkpoints/best/ckpt-{CAUSAL_LM_STEPS}.index", b"\0" * 8),
                         "--prompt", "x", "--max-new-tokens", "2"],
         f"{{d}}/run/checkpoints/best/ckpt-{CAUSAL_LM_STEPS}", "generate-damaged-checkpoint"),
    case(lambda env, d: ["generate", "--run-dir", edited_copy(env, d, "hidden_dim: 16", "hidden_dim: 32"),
                         "--prompt", "x", "--max-new-tokens", "2"],
         f"{{d}}/run/checkpoints/best/ckpt-{CAUSAL_LM_STEPS}", "generate-config-edited-after-training"),
]

EVALUATE_CASES = [
    case(lambda env, d: ["evaluate", "--run-dir", env.run, "--data", write(d, "empty.txt", "")],
         "{d}/empty.txt holds no documents to evaluate", "evaluate-empty-file"),
    case(lambda env, d: ["evaluate", "--run-dir", env.run, "--data",
                         write(d, "pairs.jsonl", jsonl({"prompt": "a", "reference": "b"}) + '{"prompt": "c\n')],
         "{d}/pairs.jsonl:2 is not valid JSON (Invalid control character at column 14)", "evaluate-malformed-pairs"),
    case(lambda env, d: ["evaluate", "--run-dir", env.run, "--data",
                         write(d, "pairs.jsonl", jsonl({"prompt": "a", "reference": 7}))],
         '{d}/pairs.jsonl:1 has a "reference" of type int', "evaluate-pairs-wrong-type"),
    case(lambda env, d: ["evaluate", "--run-dir", env.run, "--data", env.corpus, "--metrics", "accuracy_at_5"],
         "--metrics accuracy_at_5 is unknown", "evaluate-unknown-metric"),
    case(lambda env, d: ["evaluate", "--run-dir", env.run, "--data", write(d, "x.txt", b"\x00\x01\x02")],
         "{d}/x.txt looks binary", "evaluate-binary-file"),
]

EXPORT_CASES = [
    case(lambda env, d: ["export", "--run-dir", env.run, "--out", env.export, "--version", "1"],
         "{export}/1 already exists; pass --force", "export-over-existing-version"),
    case(lambda env, d: ["export", "--run-dir", untrained_copy(env, d), "--out", os.path.join(d, "out")],
         "{d}/run has no checkpoint under checkpoints/", "export-run-without-checkpoints"),
    case(lambda env, d: ["export", "--run-dir", env.run, "--out", os.path.join(d, "out"), "--version", "0"],
         "--version=0 is invalid", "export-version-0"),
    case(lambda env, d: ["export", "--run-dir", env.run, "--out", write(d, "out", "a file")],
         "cannot create export dir {d}/out: File exists", "export-out-is-a-file"),
]

SERVE_CASES = [
    case(lambda env, d: ["serve", "--model", os.path.join(d, "no_export")],
         "--model {d}/no_export is not a directory", "serve-export-dir-missing"),
    case(lambda env, d: ["serve", "--model", env.run], "--model {run} holds no SavedModel", "serve-run-dir-not-export"),
    case(lambda env, d: ["serve", "--model", env.export, "--port", "99999"],
         "argument --port: 99999 is not a port number (0-65535", "serve-port-out-of-range"),
]

CASES = (CONFIG_CASES + DATA_CASES + TOKENIZER_CASES + TRAINING_CASES + FINETUNE_CASES + GENERATE_CASES
         + EVALUATE_CASES + EXPORT_CASES + SERVE_CASES)


def fill(text, env, d):
    for key, value in (("{d}", d), ("{run}", env.run), ("{export}", env.export), ("{corpus}", env.corpus)):
        text = text.replace(key, value)
    return text


@pytest.mark.parametrize("build, expected", CASES)
def test_bad_input_is_one_line_exit_code_2_and_changes_no_file(env, tmp_path, capsys, build, expected):
    d = str(tmp_path)
    argv = build(env, d)
    roots = (d, os.path.dirname(env.run), os.path.dirname(env.export), os.path.dirname(env.corpus))
    before = snapshot(*roots)
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"tfllm {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert fill(expected, env, d) in lines[0]
    # Nothing already written changed or went, and no new file appeared.
    assert snapshot(*roots) == before


# ---------------------------------------------------------------------------------------------
# The REST API of `tfllm serve`, in-process: (request body, expected status, substring of the
# "error" field). Bodies are bytes (sent as is) or JSON values.
# ---------------------------------------------------------------------------------------------

GREEDY = {"max_new_tokens": 4, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
PREDICT = "/v1/models/tiny:predict"  # the export dir is named "tiny": the model's name


def request(body, status, expected, id, path=PREDICT):
    return pytest.param(path, body, status, expected, id=id)


REQUESTS = [
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": [1, 2]}}, 400,
            "input 'prompts' expects string values; got integer 1", "rest-prompts-not-strings"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a"], "max_new_tokens": "4"}}, 400,
            "input 'max_new_tokens' expects int32 values; got string", "rest-max-new-tokens-string"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a"], "temperature": True}}, 400,
            "input 'temperature' expects float32 values; got boolean", "rest-temperature-bool"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": [{"b64": "not base64!"}]}}, 400,
            "input 'prompts' holds a 'b64' value that is not base64", "rest-bad-base64"),
    request({"signature_name": 3, "inputs": {"prompts": ["a"]}}, 400,
            "'signature_name' key must be a string value", "rest-signature-name-not-string"),
    request(b'{"signature_name": "generate", "inputs": {"prompts": ["a"]', 400, "JSON Parse error",
            "rest-malformed-json"),
    request(b'["a", "b"]', 400, "Is not object", "rest-body-not-an-object"),
    request({"signature_name": "translate", "inputs": {"prompts": ["a"]}}, 400,
            'Serving signature key "translate" not found', "rest-unknown-signature"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a"] * 5}}, 400,
            "input 'prompts' holds 5 rows, more than this server's limit of 4", "rest-batch-too-large"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a"], "max_new_tokens": 9}}, 400,
            "max_new_tokens=9 exceeds this server's limit of 8", "rest-max-new-tokens-over-limit"),
    request({"signature_name": "generate", "inputs": {"prompts": ["a"]}}, 400, "Missing named input",
            "rest-missing-input"),
    request({"signature_name": "generate", "instances": [{"prompts": "a"}], "inputs": {"prompts": ["a"]}}, 400,
            "expecting only one of 'inputs' or 'instances'", "rest-instances-and-inputs"),
    request({"signature_name": "score", "instances": [["a"], ["b", "c"]]}, 400, "is ragged", "rest-ragged-instances"),
    request({"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["x" * 4000]}}, 413,
            "exceeds the limit of 4096 bytes", "rest-body-too-large"),
    request({"inputs": {"prompts": ["a"]}}, 404, "Servable not found for request: Latest(gpt)", "rest-unknown-model",
            path="/v1/models/gpt:predict"),
    request({"inputs": {"prompts": ["a"]}}, 404, "Servable not found for request: Specific(tiny, 7)",
            "rest-unknown-version", path="/v1/models/tiny/versions/7:predict"),
]


VALID = {"signature_name": "generate", "inputs": {**GREEDY, "prompts": ["a", "the"]}}


def valid_answer(client):
    response = client.post(PREDICT, data=json.dumps(VALID), content_type="application/json")
    assert response.status_code == 200, response.get_data()
    return json.loads(response.get_data())


@pytest.fixture(scope="module")
def rest_client(env):
    assert os.path.basename(env.export) == "tiny"
    client = Client(RestApi(load_servable(env.export), **SERVE_LIMITS))
    client.valid_answer = valid_answer(client)
    return client


@pytest.mark.parametrize("path, body, status, expected", REQUESTS)
def test_bad_request_is_4xx_with_a_json_error(env, rest_client, path, body, status, expected):
    before = snapshot(env.export)
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = rest_client.post(path, data=data, content_type="application/json")
    answer = json.loads(response.get_data())
    assert response.status_code == status, answer
    assert list(answer) == ["error"] and expected in answer["error"], answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert snapshot(env.export) == before
    # The server still answers a valid request, with what it answered before the bad one.
    assert valid_answer(rest_client) == rest_client.valid_answer


# ---------------------------------------------------------------------------------------------
# The installed command, once per kind of early error: the whole stderr is the one line.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["train", "--config", "no-such-config"], "tfllm train: error: config no-such-config not found"),
    (["generate", "--run-dir", "r", "--prompt", "x", "--strategy", "nucleus"],
     "tfllm generate: error: argument --strategy: invalid choice: 'nucleus'"),
])
def test_the_tfllm_command_prints_only_the_error_line(tmp_path, argv, expected):
    command = [os.path.join(os.path.dirname(sys.executable), "tfllm")]
    if not os.path.exists(command[0]):
        command = [sys.executable, "-m", "tfllm.cli"]
    (tmp_path / "existing.txt").write_text("kept")
    before = snapshot(str(tmp_path))
    result = subprocess.run(command + argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(str(tmp_path)) == before and sorted(os.listdir(tmp_path)) == ["existing.txt"]
