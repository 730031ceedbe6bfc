"""Tensors of a Hugging Face checkpoint directory, one at a time: `model.safetensors`, or the
shards that `model.safetensors.index.json` names."""

import json
import os

import numpy as np
import tensorflow as tf
from safetensors import safe_open

from tfllm.errors import UserError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
BYTES_PER_ELEMENT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


class SafetensorsReader:
    """`reader(name)` is the checkpoint's tensor `name` as float32 NumPy.

    Files are opened memory-mapped and a tensor is read only when asked for, so importing holds
    one tensor at a time besides the model. Read through TensorFlow, which has bfloat16 (NumPy
    does not): bf16 and fp16 checkpoints load like float32 ones.
    """

    def __init__(self, directory):
        self.directory = directory
        index_path = os.path.join(directory, INDEX_FILE)
        if os.path.exists(index_path):
            with open(index_path) as f:
                self.files = json.load(f)["weight_map"]
        elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
            self.files = None
        else:
            raise UserError(f"{directory} has no {SINGLE_FILE} nor {INDEX_FILE}: "
                            "give a checkpoint saved with safetensors")

    def names(self):
        if self.files is not None:
            return set(self.files)
        with self._file(SINGLE_FILE) as handle:
            return set(handle.keys())

    def nbytes(self, name):
        with self._handle(name) as handle:
            piece = handle.get_slice(name)
            return int(np.prod(piece.get_shape())) * BYTES_PER_ELEMENT.get(piece.get_dtype(), 4)

    def __call__(self, name):
        """Tensor `name` as float32 NumPy."""
        return self.as_tensor(name).numpy()

    def rows(self, name, count, block):
        """The first `count` rows (all when None) of tensor `name` as one float32 `tf.Tensor`, read
        `block` rows at a time."""
        with self._handle(name) as handle:
            shape = handle.get_slice(name).get_shape()
        count = shape[0] if count is None else min(count, shape[0])
        blocks = [self.as_tensor(name, rows=(start, min(start + block, count))) for start in range(0, count, block)]
        return tf.concat(blocks, axis=0)

    def as_tensor(self, name, rows=None):
        """Tensor `name` (its rows `rows[0]:rows[1]` when given) as a float32 `tf.Tensor`."""
        with self._handle(name) as handle:
            entry = handle.get_slice(name)
            if entry.get_dtype() not in BYTES_PER_ELEMENT:
                raise UserError(f"{self.directory}: tensor {name!r} holds {entry.get_dtype()} values, not weights; "
                                f"a checkpoint's weights are {', '.join(BYTES_PER_ELEMENT)}: download it again")
            value = handle.get_tensor(name) if rows is None else entry[rows[0]:rows[1]]
            return tf.cast(value, tf.float32)

    def _handle(self, name):
        filename = SINGLE_FILE if self.files is None else self.files.get(name)
        if filename is None:
            raise UserError(f"{os.path.join(self.directory, INDEX_FILE)} names no tensor {name!r}: "
                            "the checkpoint is incomplete or of another architecture")
        # Opened for each read: the pages of a mapped file count in the process's memory while
        # it stays mapped.
        handle = self._file(filename)
        if name not in handle.keys():
            raise UserError(f"{os.path.join(self.directory, filename)} holds no tensor {name!r}: "
                            "the checkpoint is incomplete or of another architecture")
        return handle

    def _file(self, filename):
        path = os.path.join(self.directory, filename)
        if not os.path.exists(path):
            raise UserError(f"{path} is missing: download every shard that {INDEX_FILE} names")
        return safe_open(path, framework="tf")
