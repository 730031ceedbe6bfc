"""AdamW as every tfllm model trains with it: norm scales and biases are not decayed."""

import keras

# Biases (the masked-LM head's `output_bias` included) and LayerNorm parameters are not decayed
# (GPT-2 / nanoGPT practice).
NO_DECAY = ["bias", "gamma", "beta"]


def adamw(learning_rate, weight_decay, beta_1, beta_2, global_clipnorm=None):
    """`keras.optimizers.AdamW` with the no-decay list; `global_clipnorm` None (or 0) clips nothing."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
        global_clipnorm=global_clipnorm or None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
