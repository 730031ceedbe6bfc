"""`RestApi`: TF Serving's REST semantics on a small saved toy model, through Werkzeug's test client."""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
from werkzeug.test import Client

from tfllm.export.rest_api import RestApi
from tfllm.export.server import Servable, signature_defs_json


class Toy(tf.Module):
    """Signatures with every input kind the API converts: strings, scalars, matrices, booleans."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"),
                                  tf.TensorSpec([], tf.int32, name="max_new_tokens")])
    def echo(self, prompts, max_new_tokens):
        tf.debugging.Assert(max_new_tokens >= 1, ["max_new_tokens must be >= 1. Received: max_new_tokens =",
                                                  max_new_tokens])
        text = tf.strings.join([prompts, tf.strings.as_string(max_new_tokens)], separator="+")
        return {"text": text, "num_tokens": tf.fill(tf.shape(prompts), max_new_tokens)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def length(self, texts):
        return {"length": tf.strings.length(texts)}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.bool, name="flag")])
    def pairs(self, x, flag):
        total = tf.reduce_sum(x, axis=1)
        return {"total": tf.where(flag, total, -total), "raw_bytes": tf.strings.as_string(total)}


class Counting:
    """A signature that counts its runs, to show that refused requests never reach the model."""

    def __init__(self, function):
        self.function = function
        self.structured_input_signature = function.structured_input_signature
        self.calls = 0

    def __call__(self, **inputs):
        self.calls += 1
        return self.function(**inputs)


@pytest.fixture(scope="module")
def servable(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy") / "3")
    toy = Toy()
    signatures = {"serving_default": toy.echo.get_concrete_function(), "length": toy.length.get_concrete_function(),
                  "pairs": toy.pairs.get_concrete_function()}
    tf.saved_model.save(toy, path, signatures=signatures)
    loaded = tf.saved_model.load(path)
    return Servable(name="toy", version=3, path=path,
                    signatures={key: Counting(loaded.signatures[key]) for key in loaded.signatures},
                    signature_defs=signature_defs_json(path))


@pytest.fixture
def client(servable):
    for function in servable.signatures.values():
        function.calls = 0
    return Client(RestApi(servable, max_body_bytes=2048, max_batch_size=4, max_new_tokens=16))


def predict(client, body, path="/v1/models/toy:predict"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = client.post(path, data=data, content_type="application/json")
    return response.status_code, json.loads(response.get_data())


def test_status_and_versions(client):
    available = {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get("/v1/models/toy").get_json() == available
    assert client.get("/v1/models/toy/versions/3").get_json() == available
    assert client.get("/v1/models/toy/versions/4").status_code == 404
    assert client.get("/v1/models/other").get_json() == {"error": "Servable not found for request: Latest(other)"}
    assert client.get("/v1/models/toy/labels/stable").status_code == 404


def test_metadata_shows_the_signature_defs_as_tf_serving_does(client):
    body = client.get("/v1/models/toy/metadata").get_json()
    assert body["model_spec"] == {"name": "toy", "signature_name": "", "version": "3"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "length", "pairs"} <= set(signatures)
    prompts = signatures["serving_default"]["inputs"]["prompts"]
    assert prompts["dtype"] == "DT_STRING" and prompts["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_columnar_request_answers_outputs_equal_to_a_direct_call(client, servable):
    status, body = predict(client, {"inputs": {"prompts": ["a", "bé"], "max_new_tokens": 5}})
    direct = servable.signatures["serving_default"].function(prompts=tf.constant(["a", "bé"]),
                                                            max_new_tokens=tf.constant(5))
    assert status == 200
    assert body == {"outputs": {"text": [t.decode() for t in direct["text"].numpy()], "num_tokens": [5, 5]}}
    assert body["outputs"]["text"] == ["a+5", "bé+5"]


def test_row_requests_answer_one_prediction_per_row(client):
    assert predict(client, {"signature_name": "length", "instances": ["ab", "", {"b64": "AAE="}]}) == (
        200, {"predictions": [2, 0, 2]})
    status, body = predict(client, {"signature_name": "pairs",
                                    "instances": [{"x": [1, 2.5], "flag": True}, {"x": [1, 1], "flag": False}]})
    assert status == 200
    assert body["predictions"] == [{"total": 3.5, "raw_bytes": {"b64": base64.b64encode(b"3.500000").decode()}},
                                   {"total": -2.0, "raw_bytes": {"b64": base64.b64encode(b"2.000000").decode()}}]


def test_a_one_input_signature_takes_a_bare_columnar_value(client):
    assert predict(client, {"signature_name": "length", "inputs": ["abc"]}) == (200, {"outputs": [3]})


@pytest.mark.parametrize(
    "body, message",
    [
        ("{not json", "JSON Parse error: "),
        ("[1, 2]", "Is not object"),
        ({"signature_name": "nope", "inputs": {}}, 'Serving signature key "nope" not found.'),
        ({"signature_name": 3, "inputs": {}}, "'signature_name' key must be a string value."),
        ({"inputs": {"prompts": ["a"]}}, "Missing named input: max_new_tokens in 'inputs' object."),
        ({"inputs": {"prompts": ["a"], "max_new_tokens": 2, "seed": 1}}, "'inputs' holds ['seed']"),
        ({"instances": ["a"], "inputs": {}}, "expecting only one of 'inputs' or 'instances'"),
        ({"signature_name": "length"}, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, "'instances' must be a non-empty list"),
        ({"instances": ["a"]}, "instances is a plain list, but expecting list of objects"),
        ({"instances": [{"prompts": "a"}]}, "instance 0 must be an object with exactly the keys"),
        ({"instances": [{"prompts": "a", "max_new_tokens": 2}]},
         "input 'max_new_tokens' must have shape () (one value for the whole request: send it in the columnar"),
        ({"inputs": {"prompts": [1, 2], "max_new_tokens": 2}}, "input 'prompts' expects string values; got integer 1"),
        ({"inputs": {"prompts": ["a"], "max_new_tokens": "2"}},
         "input 'max_new_tokens' expects int32 values; got string"),
        ({"inputs": {"prompts": ["a"], "max_new_tokens": True}}, "expects int32 values; got boolean True"),
        ({"inputs": {"prompts": ["a"], "max_new_tokens": 2.5}}, "expects int32 values; got number 2.5"),
        ({"inputs": {"prompts": ["a"], "max_new_tokens": 2**40}}, "is out of the int32 range"),
        ({"inputs": {"prompts": [["a"], ["b"]], "max_new_tokens": 2}}, "input 'prompts' must have shape (None,)"),
        ({"signature_name": "pairs", "inputs": {"x": [[1, 2], [3]], "flag": [True, False]}}, "input 'x' is ragged"),
        ({"signature_name": "pairs", "inputs": {"x": [[1, "2"]], "flag": [True]}}, "input 'x' expects float32"),
        ({"signature_name": "pairs", "inputs": {"x": [[1, 2]], "flag": [1]}}, "input 'flag' expects bool values"),
        ({"signature_name": "length", "inputs": [{"b64": "%%%"}]}, "holds a 'b64' value that is not base64"),
        # Valid JSON that no tensor can hold.
        ({"signature_name": "length", "inputs": ["\ud800"]},
         "'inputs' cannot be converted to the signature's tensors: UnicodeEncodeError"),
        ({"signature_name": "pairs", "inputs": {"x": [[10**400, 1]], "flag": [True]}},
         "'inputs' cannot be converted to the signature's tensors: OverflowError: int too large to convert to float"),
        ({"signature_name": "length", "instances": json.loads("[" * 70 + '"a"' + "]" * 70)},
         "'instances' cannot be converted to the signature's tensors: ValueError: maximum supported dimension"),
    ],
)
def test_bad_requests_are_400_with_a_message_and_never_run_the_model(client, servable, body, message):
    status, answer = predict(client, body)
    assert status == 400 and message in answer["error"] and list(answer) == ["error"]
    assert all(function.calls == 0 for function in servable.signatures.values())


def test_deep_json_and_messages_quoting_lone_surrogates_are_400_not_500(servable):
    client = Client(RestApi(servable, max_body_bytes=1 << 20, max_batch_size=4, max_new_tokens=16))
    # Deeper than the JSON parser's recursion limit, well within the body limit.
    assert predict(client, "[" * 100_000 + "]" * 100_000) == (
        400, {"error": "JSON Parse error: the document is nested too deeply"})
    # The message quotes the request's signature name, which has no UTF-8 form: escaped JSON.
    response = client.post("/v1/models/toy:predict", data=json.dumps({"signature_name": "\ud800", "inputs": {}}))
    assert response.status_code == 400 and response.get_data().isascii()
    assert json.loads(response.get_data()) == {"error": 'Serving signature key "\ud800" not found.'}
    assert all(function.calls == 0 for function in servable.signatures.values())


def test_a_failed_graph_assertion_is_400_with_its_message(client):
    status, body = predict(client, {"inputs": {"prompts": ["a"], "max_new_tokens": 0}})
    assert (status, body) == (400, {"error": "max_new_tokens must be >= 1. Received: max_new_tokens = 0"})


def test_limits_are_enforced_before_the_model_runs(client, servable):
    status, body = predict(client, {"inputs": {"prompts": ["a"] * 5, "max_new_tokens": 2}})
    assert status == 400 and "holds 5 rows, more than this server's limit of 4 (--max-batch-size)" in body["error"]
    status, body = predict(client, {"inputs": {"prompts": ["a"], "max_new_tokens": 17}})
    assert status == 400 and "max_new_tokens=17 exceeds this server's limit of 16 (--max-new-tokens)" in body["error"]
    response = client.post("/v1/models/toy:predict", data=b"x" * 2049, content_type="application/json")
    assert response.status_code == 413 and response.headers["Connection"] == "close"
    assert "request body of 2049 bytes exceeds the limit of 2048 bytes" in response.get_json()["error"]
    assert servable.signatures["serving_default"].calls == 0
    assert predict(client, {"inputs": {"prompts": ["a"] * 4, "max_new_tokens": 16}})[0] == 200


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/v1/models/toy:predict", 404), ("POST", "/v1/models/toy", 404), ("GET", "/v2/models/toy", 404),
     ("POST", "/v1/models/other:predict", 404), ("POST", "/v1/models/toy/versions/9:predict", 404),
     ("POST", "/v1/models/toy:classify", 400)],
)
def test_unknown_paths_models_and_verbs(client, method, path, status):
    response = client.open(path, method=method, data="{}", content_type="application/json")
    assert response.status_code == status and set(response.get_json()) == {"error"}


def test_versioned_predict_and_the_request_counter(servable):
    api = RestApi(servable, max_body_bytes=2048, max_batch_size=4, max_new_tokens=16)
    status, body = predict(Client(api), {"inputs": {"prompts": ["x"], "max_new_tokens": 1}},
                           path="/v1/models/toy/versions/3:predict")
    assert (status, body) == (200, {"outputs": {"text": ["x+1"], "num_tokens": [1]}})
    assert api.wait_idle(timeout=0.1)


@pytest.mark.parametrize("limit", ["max_body_bytes", "max_batch_size", "max_new_tokens"])
def test_limits_must_be_positive(servable, limit):
    limits = {"max_body_bytes": 10, "max_batch_size": 1, "max_new_tokens": 1, limit: 0}
    with pytest.raises(ValueError, match=f"{limit} must be a positive integer"):
        RestApi(servable, **limits)


def test_float_outputs_keep_their_value(client):
    status, body = predict(client, {"signature_name": "pairs", "inputs": {"x": [[0.1, 0.2]], "flag": [True]}})
    assert status == 200
    np.testing.assert_allclose(body["outputs"]["total"], [0.3], rtol=1e-6)
