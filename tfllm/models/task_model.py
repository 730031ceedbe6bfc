"""The base of the task models: a backbone under a head, with the training defaults they share."""

import keras
from keras import ops

from tfllm.optimizers import adamw
from tfllm.train_step import DistributedTrainStep


def default_optimizer():
    """AdamW(learning_rate=3e-4, weight_decay=0.1, beta_2=0.95, global_clipnorm=1.0), biases and
    norm parameters not decayed (`tfllm.optimizers.adamw`)."""
    return adamw(learning_rate=3e-4, weight_decay=0.1, beta_1=0.9, beta_2=0.95, global_clipnorm=1.0)


def accuracy():
    return [keras.metrics.SparseCategoricalAccuracy("accuracy")]


def backbone_inputs(inputs):
    """The backbone's input dict from a token-level task model's `inputs`.

    `inputs` is a dict with `"token_ids"` and optionally `"padding_mask"` (all ones when
    missing) and `"segment_ids"`, or a tensor of token ids in which every position is real.
    """
    if not isinstance(inputs, dict):
        return {"token_ids": inputs, "padding_mask": ops.ones_like(inputs), "segment_ids": None}
    token_ids = inputs["token_ids"]
    padding_mask = inputs.get("padding_mask")
    if padding_mask is None:
        padding_mask = ops.ones_like(token_ids)
    return {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": inputs.get("segment_ids")}


class TaskModel(DistributedTrainStep, keras.Model):
    """A model made of `self.backbone` and a head, trained on token-level targets.

    `compile()` defaults suit per-token targets with a `sample_weight` that marks which
    positions count (`CausalLM`, `MaskedLM`); subclasses with other targets override
    `default_loss()` and `default_metrics()`.
    `get_config()` holds the backbone; subclasses add their own arguments.
    """

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        metrics="auto",
        weighted_metrics="auto",
        **kwargs,
    ):
        """Configures training; `"auto"` picks the defaults below.

        optimizer: `default_optimizer()`: AdamW(learning_rate=3e-4, weight_decay=0.1,
            beta_2=0.95, global_clipnorm=1.0), biases and LayerNorm parameters excluded
            from weight decay.
        loss: `self.default_loss()`.
        metrics, weighted_metrics: `self.default_metrics()`.
        Other keyword arguments (`jit_compile`, `steps_per_execution`,
        `grad_accum_steps`, ...) go to `keras.Model.compile` unchanged.
        """
        default_metrics, default_weighted_metrics = self.default_metrics()
        super().compile(
            optimizer=default_optimizer() if optimizer == "auto" else optimizer,
            loss=self.default_loss() if loss == "auto" else loss,
            metrics=default_metrics if metrics == "auto" else metrics,
            weighted_metrics=default_weighted_metrics if weighted_metrics == "auto" else weighted_metrics,
            **kwargs,
        )

    def default_loss(self):
        """Cross-entropy on logits averaged over the weighted positions only
        (`"mean_with_sample_weight"`), so the loss of a half-padded batch is still a per-token loss."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")

    def default_metrics(self):
        """`(metrics, weighted_metrics)`: token accuracy, weighted by `sample_weight` so
        positions of weight 0 (padding, unmasked tokens, prompts) do not count."""
        return None, accuracy()

    def compile_from_config(self, config):
        # Keras skips restoring the compile state of models that override
        # `compile`; theirs accept the objects `compile` was given.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
