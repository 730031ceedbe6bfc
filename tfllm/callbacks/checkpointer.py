"""Keeps the last few training checkpoints and the best one by validation loss."""

import json
import os

import keras
import tensorflow as tf

LATEST_DIR = "latest"
BEST_DIR = "best"


class Checkpointer(keras.callbacks.Callback):
    """Saves model and optimizer state after every validation.

    `directory/latest/` holds the last `keep` checkpoints (`tf.train.CheckpointManager`, which
    writes the files before it updates its index, so a crash mid-save leaves the previous
    checkpoint usable); `directory/best/` holds the one with the lowest `val_loss`, with its step
    and loss in `best.json`.

    Args:
        directory: str. The run's `checkpoints/` directory.
        keep: int. Recent checkpoints to keep.
    """

    def __init__(self, directory, keep=3):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.best_loss = float("inf")

    def on_train_begin(self, logs=None):
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        checkpoint = training_checkpoint(self.model)
        self._latest = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.directory, LATEST_DIR), max_to_keep=self.keep
        )
        self._best = tf.train.CheckpointManager(
            checkpoint, os.path.join(self.directory, BEST_DIR), max_to_keep=1
        )

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self._latest.save(checkpoint_number=step)
        val_loss = (logs or {}).get("val_loss")
        if val_loss is not None and val_loss < self.best_loss:
            self.best_loss = float(val_loss)
            self._best.save(checkpoint_number=step)
            info_path = os.path.join(self.directory, BEST_DIR, "best.json")
            with open(info_path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"step": step, "val_loss": self.best_loss}, f)
            os.replace(info_path + ".tmp", info_path)


def variables_in_order(variables):
    """A trackable dict of variables keyed by their position.

    Keras 3 models track their optimizer as an attribute, so a checkpoint of the model object
    would drag the optimizer along and restore it by list position into whatever optimizer
    exists at load time; variable paths embed auto-generated, process-dependent names
    (`dense_1`). The order of `model.weights` is fixed by the architecture, so keys are
    positions, and a restore checks every shape.
    """
    module = tf.Module()
    module.variables_in_order = {f"{i:05d}": v for i, v in enumerate(variables)}
    return module


def training_checkpoint(model):
    """Model weights and optimizer state (the optimizer must be built)."""
    return tf.train.Checkpoint(
        model=variables_in_order(model.weights),
        optimizer=variables_in_order(model.optimizer.variables),
    )


def restore_weights(model, path):
    """Load the model weights of a training checkpoint; every model weight must be found."""
    status = tf.train.Checkpoint(model=variables_in_order(model.weights)).restore(path)
    status.expect_partial().assert_existing_objects_matched()
    return model


def latest_checkpoint(directory, prefer_best=True):
    """Path of the best (or else latest) checkpoint under a run's `checkpoints/`, or None."""
    order = (BEST_DIR, LATEST_DIR) if prefer_best else (LATEST_DIR, BEST_DIR)
    for name in order:
        path = tf.train.latest_checkpoint(os.path.join(directory, name))
        if path:
            return path
    return None
