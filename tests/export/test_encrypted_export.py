"""Encrypted exports and runs: sealed on disk, opened in memory only, answering as the plain ones.

The session's tiny run (`causal_lm_run`) is exported once more with a key, as `causal_lm_export`
exported it without one, and both are asked the same greedy questions.
"""

import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from tests.export.export_testing import PROMPTS, request
from tfllm import cli
from tfllm.config import load_config, save_config
from tfllm.encryption import encrypt_file, is_encrypted, read_key, write_new_key
from tfllm.errors import UserError
from tfllm.export.encrypted_export import load_saved_model
from tfllm.manifest import MANIFEST_FILENAME
from tfllm.export.server import ModelServer, load_servable

SEALED = ["variables/variables.data-00000-of-00001", "variables/variables.index"]
GREEDY = {"max_new_tokens": tf.constant(5), "temperature": tf.constant(0.0), "top_k": tf.constant(0),
          "top_p": tf.constant(1.0), "seed": tf.constant(0)}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    return write_new_key(str(tmp_path_factory.mktemp("keys") / "model.key")).path


@pytest.fixture(scope="module")
def encrypted_export(run_dir, key_file, tmp_path_factory):
    """`tfllm export` of the session's run with --encrypt-key-file: EXPORT_DIR/1/, as
    `causal_lm_export` is written but for the flag."""
    out = str(tmp_path_factory.mktemp("encrypted") / "tiny")
    assert cli.main(["export", "--run-dir", run_dir, "--out", out, "--encrypt-key-file", key_file]) == 0
    return out


def generate(loaded, prompts=PROMPTS[:3]):
    return loaded.signatures["generate"](prompts=tf.constant(prompts), **GREEDY)["text"].numpy().tolist()


def one_line_exit_2(argv, capsys, *words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err
    return err


def test_the_weights_are_sealed_and_the_manifest_says_which(encrypted_export, key_file):
    version = os.path.join(encrypted_export, "1")
    manifest = json.load(open(os.path.join(version, MANIFEST_FILENAME)))
    encryption = manifest["encryption"]
    assert encryption["algorithm"] == "AES-256-GCM" and encryption["files"] == SEALED
    assert encryption["bound_to"] == "saved_model.pb" and len(encryption["key_id"]) == 16
    assert all(is_encrypted(os.path.join(version, name)) for name in SEALED)
    assert not is_encrypted(os.path.join(version, "saved_model.pb"))


def test_the_plaintext_weights_never_reach_the_disk(encrypted_export, export_dir):
    """No file written by the encrypted export (nor anything left beside it) holds any 64
    bytes of the plain export's weights."""
    plain = open(os.path.join(export_dir, "1", SEALED[0]), "rb").read()
    pieces = [plain[start:start + 64] for start in range(0, len(plain) - 64, len(plain) // 16)]
    written = [path for path in glob.glob(os.path.join(os.path.dirname(encrypted_export), "**"), recursive=True)
               if os.path.isfile(path)]
    assert len(written) >= 5
    for path in written:
        content = open(path, "rb").read()
        assert not any(piece in content for piece in pieces), path


def test_an_encrypted_export_answers_as_the_plain_one(encrypted_export, export_dir, key_file):
    plain = tf.saved_model.load(os.path.join(export_dir, "1"))
    opened = load_saved_model(os.path.join(encrypted_export, "1"), key_file)
    assert generate(opened) == generate(plain)
    texts = tf.constant(PROMPTS[:2])
    assert opened.signatures["score"](texts=texts)["log_probability"].numpy().tolist() == pytest.approx(
        plain.signatures["score"](texts=texts)["log_probability"].numpy().tolist())


def test_tfllm_serve_with_the_key_serves_it(encrypted_export, key_file):
    servable = load_servable(encrypted_export, key_file=key_file)
    with ModelServer(servable, "127.0.0.1", 0, max_body_bytes=4096, max_batch_size=4, max_new_tokens=8) as server:
        status, body = request(f"{server.url}/v1/models/tiny:predict", {"signature_name": "score",
                                                                        "instances": PROMPTS[:2]})
        assert status == 200 and len(body["predictions"]) == 2
        status, body = request(f"{server.url}/v1/models/tiny/metadata")
        assert status == 200 and "generate" in body["metadata"]["signature_def"]["signature_def"]


def test_serving_without_the_key_or_with_another_is_one_line_and_exit_2(encrypted_export, export_dir, tmp_path,
                                                                        capsys):
    serve = ["serve", "--model", encrypted_export, "--port", "0"]
    one_line_exit_2(serve, capsys, "is encrypted", "--encrypt-key-file")
    other = write_new_key(str(tmp_path / "other.key")).path
    one_line_exit_2(serve + ["--encrypt-key-file", other], capsys, "key id")
    # A key given for a plain export: its weights would be served as if the key vouched for them.
    one_line_exit_2(["serve", "--model", export_dir, "--port", "0", "--encrypt-key-file", other], capsys,
                    "is not encrypted")


def copy_version(encrypted_export, tmp_path, keep_manifest=False):
    """A copy of the export's version 1 (without its manifest, so that what the manifest would
    catch first reaches the decryption)."""
    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(encrypted_export, "1"), copy)
    if not keep_manifest:
        os.remove(copy / MANIFEST_FILENAME)
    return copy


@pytest.mark.parametrize("name", SEALED)
def test_a_flipped_byte_in_a_sealed_file_is_refused_before_anything_is_served(encrypted_export, key_file,
                                                                              tmp_path, name):
    copy = copy_version(encrypted_export, tmp_path)
    path = copy / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(UserError, match=f"{name} was not encrypted with this key or was changed") as error:
        load_saved_model(str(copy), key_file)
    assert "\n" not in str(error.value)


def test_swapped_files_are_refused(encrypted_export, key_file, tmp_path):
    copy = copy_version(encrypted_export, tmp_path)
    index, data = (copy / name for name in SEALED[::-1])
    index_bytes, data_bytes = index.read_bytes(), data.read_bytes()
    index.write_bytes(data_bytes)
    data.write_bytes(index_bytes)
    with pytest.raises(UserError, match="was not encrypted with this key or was changed"):
        load_saved_model(str(copy), key_file)


def test_another_graph_cannot_be_put_beside_the_sealed_weights(encrypted_export, export_dir, key_file, tmp_path):
    # The plain export's graph reads the same variables; the sealed weights are bound to their own.
    copy = copy_version(encrypted_export, tmp_path)
    shutil.copy(os.path.join(export_dir, "1", "saved_model.pb"), copy / "saved_model.pb")
    if (copy / "saved_model.pb").read_bytes() == open(os.path.join(encrypted_export, "1", "saved_model.pb"),
                                                      "rb").read():
        pytest.skip("both exports wrote the same graph")
    with pytest.raises(UserError, match="was not encrypted with this key or was changed"):
        load_saved_model(str(copy), key_file)


def test_a_changed_export_is_refused_by_its_manifest_first(encrypted_export, key_file, tmp_path, capsys):
    copy = copy_version(encrypted_export, tmp_path, keep_manifest=True)
    path = copy / SEALED[0]
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    base = tmp_path / "served"
    base.mkdir()
    os.rename(copy, base / "1")
    one_line_exit_2(["serve", "--model", str(base), "--port", "0", "--encrypt-key-file", key_file], capsys,
                    "does not match its manifest.json")


@pytest.fixture(scope="module")
def encrypted_run(run_dir, key_file, tmp_path_factory):
    """A copy of the session's run whose checkpoints are sealed in place, as a run trained with
    train.encrypt_key_file writes them, and whose config names the key."""
    copy = str(tmp_path_factory.mktemp("encrypted_run") / "run")
    shutil.copytree(run_dir, copy)
    for path in glob.glob(os.path.join(copy, "checkpoints", "*", "ckpt-*")):
        encrypt_file(path, read_key(key_file), os.path.basename(path))
    config_path = os.path.join(copy, "config.yaml")
    save_config(load_config(config_path).replace({"train.encrypt_key_file": key_file}), config_path)
    return copy


def test_an_encrypted_run_generates_as_the_plain_one(encrypted_run, run_dir, capsys):
    generate_args = ["generate", "--prompt", "def f(x):", "--strategy", "greedy", "--max-new-tokens", "6"]
    assert cli.main([*generate_args, "--run-dir", run_dir]) == 0
    plain = capsys.readouterr().out
    assert cli.main([*generate_args, "--run-dir", encrypted_run]) == 0
    assert capsys.readouterr().out == plain


def test_an_encrypted_run_without_its_key_is_one_line_and_exit_2(encrypted_run, tmp_path, capsys):
    moved = str(tmp_path / "run")
    shutil.copytree(encrypted_run, moved)
    config_path = os.path.join(moved, "config.yaml")
    save_config(load_config(config_path).replace({"train.encrypt_key_file": None}), config_path)
    generate_args = ["generate", "--run-dir", moved, "--prompt", "def", "--max-new-tokens", "2"]
    one_line_exit_2(generate_args, capsys, "is encrypted", "--encrypt-key-file")
    other = write_new_key(str(tmp_path / "other.key")).path
    one_line_exit_2([*generate_args, "--encrypt-key-file", other], capsys,
                    "was not encrypted with this key or was changed")
    one_line_exit_2(["export", "--run-dir", moved, "--out", str(tmp_path / "hf"), "--format", "huggingface",
                     "--encrypt-key-file", other], capsys, "would write its weights in plaintext")


def test_the_export_of_an_encrypted_run_is_encrypted_with_its_key(encrypted_run, key_file, tmp_path):
    from tfllm.export.saved_model import export

    target = export(encrypted_run, str(tmp_path / "tiny"), jit_compile=False)
    manifest = json.load(open(os.path.join(target, MANIFEST_FILENAME)))
    assert manifest["encryption"]["files"] == SEALED
    assert manifest["encryption"]["key_id"] == read_key(key_file).key_id
    with pytest.raises(UserError, match="is encrypted"):
        load_saved_model(target)
    assert "generate" in load_saved_model(target, key_file).signatures
