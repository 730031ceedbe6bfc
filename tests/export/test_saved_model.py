"""`tfllm export`: the layout, the signatures, and a fresh process that serves exactly what tfllm generates."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfllm.manifest import read_manifest, verify_manifest
from tfllm.export.saved_model import next_version
from tests.export.export_testing import MAX_LENGTH, PROMPTS
from tfllm import cli
from tfllm.generator import Generator
from tfllm.samplers import GreedySampler

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def settings(max_new_tokens, temperature, top_k=0, top_p=1.0, seed=0, prompts=PROMPTS):
    return {"prompts": prompts, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "seed": seed}


# Calls of `generate` by name: greedy at two batch sizes, then seeded sampling, some twice.
GENERATE_CALLS = {
    "greedy_1": settings(8, 0.0, prompts=PROMPTS[:1]),
    "greedy_4": settings(8, 0.0),
    "random_7": settings(12, 0.8, seed=7),
    "random_7_again": settings(12, 0.8, seed=7),
    "random_8": settings(12, 0.8, seed=8),
    "top_p_7": settings(12, 1.0, top_p=0.6, seed=7),
    "top_p_7_again": settings(12, 1.0, top_p=0.6, seed=7),
    "top_k_3": settings(12, 1.0, top_k=5, seed=3),
    "top_k_3_again": settings(12, 1.0, top_k=5, seed=3),
}
SCORE_CALLS = [PROMPTS[:1], PROMPTS + ["x" * 40]]

# Runs in a fresh interpreter that imports only what TF Serving has, then the server module.
FRESH_PROCESS = r"""
import json, os, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tensorflow-text ops

version_dir, repo_root, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
loaded = tf.saved_model.load(version_dir)
types = {"prompts": tf.string, "max_new_tokens": tf.int32, "temperature": tf.float32, "top_k": tf.int32,
         "top_p": tf.float32, "seed": tf.int32}

def generate(signature, call):
    out = loaded.signatures[signature](**{key: tf.constant(value, types[key]) for key, value in call.items()})
    return {"text": [t.decode("utf-8") for t in out["text"].numpy()], "num_tokens": out["num_tokens"].numpy().tolist()}

results = {"generate": {name: generate("generate", call) for name, call in calls["generate"].items()}, "score": []}
for texts in calls["score"]:
    out = loaded.signatures["score"](texts=tf.constant(texts))
    results["score"].append({key: value.numpy().tolist() for key, value in out.items()})
results["serving_default"] = generate("serving_default", calls["generate"]["greedy_4"])
# TensorFlow imports keras itself; nothing of tfllm or KerasHub may be needed.
results["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tfllm", "keras_hub"))

from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
saved_model = saved_model_pb2.SavedModel()
with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
graph = saved_model.meta_graphs[0].graph_def
ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
results["unregistered_ops"] = sorted(op for op in ops if op_def_registry.get(op) is None)
results["python_ops"] = sorted(op for op in ops if "PyFunc" in op)
# The functions compiled with XLA, and every function they call (loop bodies, branches).
functions = {f.signature.name: f for f in graph.library.function}
compiled = [name for name, f in functions.items() if f.attr["_XlaMustCompile"].b]
reached, todo = set(), list(compiled)
while todo:
    name = todo.pop()
    if name not in reached:
        reached.add(name)
        todo += [value.func.name for node in functions[name].node_def for value in node.attr.values()
                 if value.func.name] + [f.name for node in functions[name].node_def for value in node.attr.values()
                 for f in value.list.func]
def string_typed(node):  # whether an op takes or gives a string tensor (7 is DT_STRING)
    op = op_def_registry.get(node.op)
    for arg in list(op.input_arg) + list(op.output_arg) if op else []:
        types = [arg.type, node.attr[arg.type_attr].type if arg.type_attr else 0]
        types += list(node.attr[arg.type_list_attr].list.type) if arg.type_list_attr else []
        if 7 in types:
            return True
    return False
results["compiled_functions"] = len(compiled)
results["string_ops_in_xla"] = sorted({n.op for name in reached for n in functions[name].node_def if string_typed(n)})
results["string_ops_outside_xla"] = sorted(
    {n.op for name, f in functions.items() if name not in reached for n in f.node_def if string_typed(n)})
results["xla_ops_outside_xla"] = sorted(
    {n.op for name, f in functions.items() if name not in reached for n in f.node_def if n.op.startswith("Xla")}
    | {n.op for n in graph.node if n.op.startswith("Xla")})

sys.path.insert(0, repo_root)
from werkzeug.test import Client
from tfllm.export.rest_api import RestApi
from tfllm.export.server import load_servable
app = RestApi(load_servable(os.path.dirname(version_dir)), max_body_bytes=1 << 20, max_batch_size=8,
              max_new_tokens=16)
response = Client(app).post(f"/v1/models/{os.path.basename(os.path.dirname(version_dir))}:predict",
                            json={"signature_name": "generate", "inputs": calls["generate"]["greedy_4"]})
results["served"] = response.get_json()
results["server_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tfllm", "keras_hub"))
print(json.dumps(results))
"""


@pytest.fixture(scope="module", autouse=True)
def launched(export_dir):
    """The fresh process and `saved_model_cli`, started at once so that they overlap each other
    and the in-process reference; the fixtures below collect them."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    version_dir = os.path.join(export_dir, "1")
    calls = json.dumps({"generate": GENERATE_CALLS, "score": SCORE_CALLS})
    processes = {
        "fresh": [sys.executable, "-c", FRESH_PROCESS, version_dir, REPO_ROOT, calls],
        "cli": ["saved_model_cli", "show", "--dir", version_dir, "--all"],
    }
    started = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment, cwd=os.path.dirname(export_dir))
        for name, command in processes.items()
    }
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def finished(process):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def fresh(launched):
    """What a fresh process importing only tensorflow and tensorflow_text gets from the export."""
    return json.loads(finished(launched["fresh"]).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def in_process(trained):
    """`Generator`'s greedy completions and token counts, as `tfllm generate` makes them."""
    config, tokenizer, model = trained
    generator = Generator(model, tokenizer, max_length=config.max_seq_len)
    results = {}
    for name in ("greedy_1", "greedy_4"):
        call = GENERATE_CALLS[name]
        ids = generator.generate_ids(call["prompts"], call["max_new_tokens"], GreedySampler())
        texts = generator.generate(call["prompts"], call["max_new_tokens"], GreedySampler())
        results[name] = {"text": texts, "num_tokens": [len(row) for row in ids]}
    return results


def reference_score(trained, text):
    """(sum of log-probabilities, tokens scored) of `text` after EOS, in float64 NumPy."""
    _, tokenizer, model = trained
    ids = ([1] + tokenizer.tokenize(tf.constant([text])).to_list()[0])[:MAX_LENGTH]
    if len(ids) == 1:
        return 0.0, 0
    logits = model(tf.constant([ids])).numpy()[0].astype(np.float64)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return sum(log_probabilities[i, ids[i + 1]] for i in range(len(ids) - 1)), len(ids) - 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["greedy_1", "greedy_4"])
def test_greedy_generation_equals_in_process_generation_at_two_batch_sizes(in_process, fresh, name):
    assert fresh["generate"][name] == in_process[name]
    assert fresh["serving_default"] == in_process["greedy_4"]


@pytest.mark.slow
def test_greedy_completions_are_varied_so_the_comparison_means_something(in_process):
    texts = in_process["greedy_4"]["text"]
    assert len(set(texts)) >= 3 and max(in_process["greedy_4"]["num_tokens"]) == 8


@pytest.mark.slow
def test_sampling_with_a_fixed_seed_is_reproducible_through_the_saved_model(fresh):
    generate = fresh["generate"]
    for name in ("random_7", "top_k_3", "top_p_7"):
        assert generate[name] == generate[name + "_again"]
    assert generate["random_7"]["text"] != generate["random_8"]["text"]
    assert generate["random_7"]["text"] != generate["top_k_3"]["text"] != generate["top_p_7"]["text"]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [0, 1])
def test_score_equals_a_numpy_reference_at_two_batch_sizes(fresh, trained, batch):
    scored = fresh["score"][batch]
    expected = [reference_score(trained, text) for text in SCORE_CALLS[batch]]
    np.testing.assert_allclose(scored["log_probability"], [lp for lp, _ in expected], rtol=1e-5, atol=1e-4)
    assert scored["num_tokens"] == [n for _, n in expected]
    perplexity = [np.exp(-lp / n) if n else 1.0 for lp, n in expected]
    np.testing.assert_allclose(scored["perplexity"], perplexity, rtol=1e-5)


@pytest.mark.slow
def test_the_fresh_process_needs_no_tfllm_or_keras_hub_and_the_server_no_model_code(fresh):
    assert fresh["modules"] == []
    assert fresh["server_modules"] == ["tfllm", "tfllm.digests", "tfllm.encryption", "tfllm.errors", "tfllm.export",
                                       "tfllm.export.access", "tfllm.export.encrypted_export",
                                       "tfllm.export.json_tensors", "tfllm.export.request_batcher",
                                       "tfllm.export.rest_api", "tfllm.export.server", "tfllm.files",
                                       "tfllm.manifest"]
    assert fresh["served"] == {"outputs": fresh["generate"]["greedy_4"]}


@pytest.mark.slow
def test_every_op_is_one_stock_tensorflow_or_tensorflow_text_registers(fresh):
    assert fresh["unregistered_ops"] == []
    assert fresh["python_ops"] == []


@pytest.mark.slow
def test_only_the_decoding_loop_is_compiled_with_xla_and_no_string_op_is_inside_it(fresh):
    assert fresh["compiled_functions"] == 1
    assert fresh["string_ops_in_xla"] == []
    assert {"UnicodeDecode", "UnicodeEncode", "UnicodeTranscode"} <= set(fresh["string_ops_outside_xla"])
    assert fresh["xla_ops_outside_xla"] == []


def signature_listing(text):
    """`saved_model_cli show` output -> {signature: {(inputs|outputs, name): (dtype, shape)}}."""
    listing = {}
    for block in re.split(r"\n(?=signature_def\[)", text):
        header = re.match(r"signature_def\['([^']+)'\]:", block)
        if header:
            entries = re.findall(r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\S+)", block)
            listing[header[1]] = {(kind, name): (dtype, shape) for kind, name, dtype, shape in entries}
    return listing


GENERATE_LISTING = {
    ("inputs", "prompts"): ("DT_STRING", "(-1)"), ("inputs", "max_new_tokens"): ("DT_INT32", "()"),
    ("inputs", "temperature"): ("DT_FLOAT", "()"), ("inputs", "top_k"): ("DT_INT32", "()"),
    ("inputs", "top_p"): ("DT_FLOAT", "()"), ("inputs", "seed"): ("DT_INT32", "()"),
    ("outputs", "text"): ("DT_STRING", "(-1)"), ("outputs", "num_tokens"): ("DT_INT32", "(-1)"),
}
SCORE_LISTING = {
    ("inputs", "texts"): ("DT_STRING", "(-1)"), ("outputs", "log_probability"): ("DT_FLOAT", "(-1)"),
    ("outputs", "num_tokens"): ("DT_INT32", "(-1)"), ("outputs", "perplexity"): ("DT_FLOAT", "(-1)"),
}


@pytest.mark.slow
def test_saved_model_cli_show_all_lists_both_signatures_with_dtypes_and_shapes(launched):
    stdout = finished(launched["cli"])
    listing = signature_listing(stdout)
    assert set(listing) == {"__saved_model_init_op", "generate", "serving_default", "score"}
    assert listing["generate"] == GENERATE_LISTING
    assert listing["serving_default"] == GENERATE_LISTING
    assert listing["score"] == SCORE_LISTING
    assert "Method name is: tensorflow/serving/predict" in stdout


def test_the_export_dir_has_the_tf_serving_layout_and_a_matching_manifest(export_dir, run_dir):
    assert sorted(os.listdir(export_dir)) == ["1"]  # no temporary directory left behind
    version_dir = os.path.join(export_dir, "1")
    assert {"saved_model.pb", "variables", "manifest.json"} <= set(os.listdir(version_dir))
    manifest = read_manifest(version_dir)
    assert verify_manifest(version_dir) == []
    assert manifest["training_step"] == 4 and manifest["checkpoint"].endswith("ckpt-4")
    assert manifest["run_dir"] == os.path.abspath(run_dir) and manifest["version"] == 1
    assert manifest["config"]["model"]["hidden_dim"] == 16 and manifest["max_length"] == MAX_LENGTH
    assert manifest["tokenizer"] == {"kind": "char", "vocabulary_size": 64}
    assert manifest["signatures"]["generate"]["inputs"]["prompts"] == {"dtype": "string", "shape": [None]}
    assert "saved_model.pb" in manifest["files"] and "variables/variables.index" in manifest["files"]


def test_force_replaces_an_existing_version(export_dir, run_dir, tmp_path, capsys):
    out = str(tmp_path / "exports")
    shutil.copytree(export_dir, out)
    stray = os.path.join(out, "1", "stray.txt")
    with open(stray, "w") as f:
        f.write("left by hand")
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--version", "1", "--force"]) == 0
    assert not os.path.exists(stray) and verify_manifest(os.path.join(out, "1")) == []
    assert sorted(os.listdir(out)) == ["1"]
    assert f"serve it with: tfllm serve --model {out}" in capsys.readouterr().out


def test_without_version_the_next_number_is_taken(tmp_path):
    assert next_version(str(tmp_path)) == 1
    for name in ("1", "7", "latest", ".tmp-9-abc"):
        (tmp_path / name).mkdir()
    assert next_version(str(tmp_path)) == 8


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tfllm ")
    return err


def test_an_existing_version_is_never_overwritten_without_force(export_dir, run_dir, tmp_path, capsys):
    out = str(tmp_path / "exports")
    shutil.copytree(export_dir, out)
    before = read_manifest(os.path.join(out, "1"))
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--version", "1"]) == 2
    assert "1 already exists; pass --force" in error_line(capsys)
    assert read_manifest(os.path.join(out, "1")) == before and verify_manifest(os.path.join(out, "1")) == []


def test_a_run_dir_without_checkpoint_is_one_line_and_exit_code_2(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(run_dir, "config.yaml"), bare / "config.yaml")
    shutil.copytree(os.path.join(run_dir, "tokenizer"), bare / "tokenizer")
    out = tmp_path / "exports"
    assert cli.main(["export", "--run-dir", str(bare), "--out", str(out)]) == 2
    assert "has no checkpoint under checkpoints/" in error_line(capsys)
    assert not out.exists() or os.listdir(out) == []


def test_an_export_dir_that_cannot_be_written_is_one_line_and_exit_code_2(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert cli.main(["export", "--run-dir", run_dir, "--out", str(blocker / "exports")]) == 2
    assert "cannot create export dir" in error_line(capsys)
    assert cli.main(["export", "--run-dir", run_dir, "--out", str(blocker)]) == 2
    assert "cannot create export dir" in error_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_export_dir_is_one_line_and_exit_code_2(run_dir, tmp_path, capsys):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        assert cli.main(["export", "--run-dir", run_dir, "--out", str(read_only)]) == 2
        assert "is not writable" in error_line(capsys)
    finally:
        read_only.chmod(0o700)


def test_a_version_below_1_is_rejected(run_dir, tmp_path, capsys):
    assert cli.main(["export", "--run-dir", run_dir, "--out", str(tmp_path), "--version", "0"]) == 2
    assert "--version=0 is invalid" in error_line(capsys)


def test_a_bfloat16_export_saves_two_bytes_per_weight_and_answers_as_its_model_does(export_dir, run_dir, tmp_path):
    from tfllm.lora import count_parameters
    from tfllm.run import Run

    out = str(tmp_path / "bf16")
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--precision", "bfloat16"]) == 0
    assert read_manifest(os.path.join(out, "1"))["precision"] == "bfloat16"
    sizes = [sum(os.path.getsize(os.path.join(d, "1", "variables", n)) for n in os.listdir(os.path.join(d, "1", "variables")))
             for d in (export_dir, out)]
    run = Run.open(run_dir)
    model, _ = run.load_servable_model("bfloat16")
    assert sizes[0] - sizes[1] == pytest.approx(2 * count_parameters(model.weights), rel=0.01), sizes
    call = settings(8, 0.0)
    served = tf.saved_model.load(os.path.join(out, "1")).signatures["generate"](
        prompts=tf.constant(call["prompts"]), max_new_tokens=tf.constant(8), temperature=tf.constant(0.0),
        top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0))["text"].numpy()
    expected = Generator(model, run.tokenizer, MAX_LENGTH, jit_compile=True).generate(PROMPTS, 8, GreedySampler())
    assert [text.decode() for text in served] == expected


def test_quantize_and_a_different_precision_are_one_line_and_exit_code_2(run_dir, tmp_path, capsys):
    out = tmp_path / "exports"
    assert cli.main(["export", "--run-dir", run_dir, "--out", str(out), "--quantize", "int8",
                     "--precision", "bfloat16"]) == 2
    assert "--quantize int8 and --precision bfloat16 disagree" in error_line(capsys)
    assert not out.exists()
