"""TF Serving's JSON encoding of tensors, value by value, against NumPy arrays."""

import numpy as np
import pytest
import tensorflow as tf

from tfllm.export.json_tensors import (
    JsonTensorError,
    arrays_from_inputs,
    arrays_from_instances,
    columns_of,
    rows_of,
    to_array,
    to_json,
)

SPECS = {"x": tf.TensorSpec([None, 2], tf.float32), "k": tf.TensorSpec([None], tf.int64)}


def test_nested_lists_become_arrays_of_the_spec_dtype():
    array = to_array("x", [[1, 2.5], [3, 4]], SPECS["x"])
    assert array.dtype == np.float32 and array.shape == (2, 2)
    np.testing.assert_array_equal(array, [[1.0, 2.5], [3.0, 4.0]])
    strings = to_array("s", [["é", {"b64": "AP8="}]], tf.TensorSpec([None, None], tf.string))
    assert strings.dtype == object and strings.tolist() == [["é".encode(), b"\x00\xff"]]
    assert to_array("n", 7, tf.TensorSpec([], tf.int32)).shape == ()
    assert to_array("e", [], tf.TensorSpec([None], tf.int32)).shape == (0,)


def test_rows_are_stacked_and_columns_are_taken_whole():
    rows = arrays_from_instances([{"x": [1, 2], "k": 5}, {"x": [3, 4], "k": 6}], SPECS)
    columns = arrays_from_inputs({"x": [[1, 2], [3, 4]], "k": [5, 6]}, SPECS)
    for name in SPECS:
        np.testing.assert_array_equal(rows[name], columns[name])
        assert rows[name].dtype == columns[name].dtype == SPECS[name].dtype.as_numpy_dtype
    single = {"t": tf.TensorSpec([None], tf.string)}
    assert arrays_from_instances(["a", "b"], single)["t"].tolist() == [b"a", b"b"]
    assert arrays_from_inputs(["a", "b"], single)["t"].tolist() == [b"a", b"b"]


@pytest.mark.parametrize(
    "value, spec, message",
    [
        ([[1, 2], [3]], SPECS["x"], "is ragged"),
        ([[1, 2], 3], SPECS["x"], "is ragged"),
        ([1, 2], SPECS["x"], "must have shape (None, 2); got shape (2,)"),
        ([[1, None]], SPECS["x"], "expects float32 values; got null None"),
        ([True], SPECS["k"], "expects int64 values; got boolean True"),
        ([2**63], SPECS["k"], "is out of the int64 range"),
        ([{"b64": 3}], tf.TensorSpec([None], tf.string), "expects string values; got object"),
        ([1], tf.TensorSpec([None], tf.bool), "expects bool values; got integer 1"),
    ],
)
def test_values_that_do_not_fit_say_which_input_and_why(value, spec, message):
    with pytest.raises(JsonTensorError, match="input 'v'") as error:
        to_array("v", value, spec)
    assert message in str(error.value)


def test_outputs_as_rows_and_columns():
    outputs = {"text": np.array([b"a", b"\xe2\x82"], dtype=object), "n": np.array([1, 2], np.int32)}
    assert rows_of(outputs) == [{"text": "a", "n": 1}, {"text": "\ufffd", "n": 2}]
    assert columns_of(outputs) == {"text": ["a", "\ufffd"], "n": [1, 2]}
    assert rows_of({"n": np.array([1, 2])}) == [1, 2] and columns_of({"n": np.array([1, 2])}) == [1, 2]
    assert to_json("raw_bytes", np.array([[b"\x00"]], dtype=object)) == [[{"b64": "AA=="}]]
    with pytest.raises(JsonTensorError, match="do not share a batch size"):
        rows_of({"a": np.zeros(2), "b": np.zeros(3)})
