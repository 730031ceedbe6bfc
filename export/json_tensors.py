"""TF Serving's JSON encoding of tensors: request values to NumPy arrays, outputs back to JSON.

The rules are those of TF Serving's REST API: strings are UTF-8 text or `{"b64": ...}`
objects; the row format (`instances`) stacks one entry per row along a new leading axis; the
columnar format (`inputs`) gives each named input whole; an output whose name ends in
`_bytes` is answered base64-encoded. A value that cannot be converted raises
`JsonTensorError` with one line saying which input and why.
"""

import base64
import binascii

import numpy as np
import tensorflow as tf

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               dict: "object", type(None): "null"}


class JsonTensorError(ValueError):
    """A request value that does not fit its signature input; the message says which and why."""


def is_base64_object(value):
    return isinstance(value, dict) and list(value) == ["b64"]


def arrays_from_instances(instances, specs):
    """Row format: one entry per row, stacked along a new leading axis per input."""
    if not isinstance(instances, list) or not instances:
        raise JsonTensorError("'instances' must be a non-empty list")
    named = isinstance(instances[0], dict) and not is_base64_object(instances[0])
    if not named:
        if len(specs) > 1:
            raise JsonTensorError("instances is a plain list, but expecting list of objects as multiple "
                                  f"input tensors required as per tensorinfo_map: {sorted(specs)}")
        (name,) = specs
        return {name: to_array(name, instances, specs[name])}
    columns = {name: [] for name in specs}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or set(instance) != set(specs):
            keys = sorted(instance) if isinstance(instance, dict) else json_type(instance)
            raise JsonTensorError(f"instance {index} must be an object with exactly the keys {sorted(specs)}; "
                                  f"got {keys}")
        for name in specs:
            columns[name].append(instance[name])
    return {name: to_array(name, columns[name], specs[name]) for name in specs}


def arrays_from_inputs(inputs, specs):
    """Columnar format: an object of named inputs, or a bare value for a one-input signature."""
    if isinstance(inputs, dict) and not is_base64_object(inputs):
        for name in sorted(specs):
            if name not in inputs:
                raise JsonTensorError(f"Missing named input: {name} in 'inputs' object.")
        extra = sorted(set(inputs) - set(specs))
        if extra:
            raise JsonTensorError(f"'inputs' holds {extra}, which the signature does not take; "
                                  f"it takes {sorted(specs)}")
        return {name: to_array(name, inputs[name], specs[name]) for name in specs}
    if len(specs) > 1:
        raise JsonTensorError("inputs is a plain value/list, but expecting an object as multiple input "
                              f"tensors required as per tensorinfo_map: {sorted(specs)}")
    (name,) = specs
    return {name: to_array(name, inputs, specs[name])}


def to_array(name, value, spec):
    """A NumPy array of `spec`'s dtype from nested JSON lists; an error when ragged, mistyped or misshapen."""
    shape = shape_of(name, value)
    convert = _converter(spec.dtype)
    numpy_dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
    array = np.array([convert(name, leaf) for leaf in leaves_of(value)], dtype=numpy_dtype).reshape(shape)
    if not spec.shape.is_compatible_with(array.shape):
        hint = ""
        if spec.shape.rank == 0:
            hint = " (one value for the whole request: send it in the columnar 'inputs' format)"
        raise JsonTensorError(f"input '{name}' must have shape {tuple(spec.shape.as_list())}{hint}; "
                              f"got shape {array.shape}")
    return array


def shape_of(name, value):
    """The shape of nested lists `value`: () for a scalar; an error when the lists are ragged."""
    if not isinstance(value, list):
        return ()
    shapes = {shape_of(name, item) for item in value}
    if len(shapes) > 1:
        raise JsonTensorError(f"input '{name}' is ragged: its nested lists must all have the same length")
    return (len(value),) + (shapes.pop() if shapes else ())


def leaves_of(value):
    if isinstance(value, list):
        for item in value:
            yield from leaves_of(item)
    else:
        yield value


def json_type(value):
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _converter(dtype):
    def mistyped(name, value):
        return JsonTensorError(f"input '{name}' expects {dtype.name} values; got {json_type(value)} {value!r:.80}")

    def to_bytes(name, value):
        if isinstance(value, str):
            return value.encode("utf-8")
        if is_base64_object(value) and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error:
                raise JsonTensorError(f"input '{name}' holds a 'b64' value that is not base64") from None
        raise mistyped(name, value)

    def to_integer(name, value):
        if not isinstance(value, int) or isinstance(value, bool):
            raise mistyped(name, value)
        if not dtype.min <= value <= dtype.max:
            raise JsonTensorError(f"input '{name}' value {value} is out of the {dtype.name} range")
        return value

    def to_float(name, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise mistyped(name, value)
        return value

    def to_bool(name, value):
        if not isinstance(value, bool):
            raise mistyped(name, value)
        return value

    if dtype == tf.string:
        return to_bytes
    if dtype == tf.bool:
        return to_bool
    return to_integer if dtype.is_integer else to_float


def to_json(name, array):
    """Nested lists of JSON values; strings as UTF-8 text, or `{"b64": ...}` for a `*_bytes` output."""
    if array.dtype != object:
        return array.tolist()

    def encode(value):
        if isinstance(value, list):
            return [encode(item) for item in value]
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")

    return encode(array.tolist())


def rows_of(outputs):
    """`predictions`: one entry per row; an object of outputs when there are several."""
    sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise JsonTensorError("the outputs do not share a batch size, so they cannot be answered as rows; "
                              "use the columnar 'inputs' format")
    columns = {name: to_json(name, array) for name, array in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [{name: values[row] for name, values in columns.items()} for row in range(sizes.pop())]


def columns_of(outputs):
    """`outputs`: the one output's value, or an object of outputs."""
    columns = {name: to_json(name, array) for name, array in outputs.items()}
    return next(iter(columns.values())) if len(columns) == 1 else columns
