"""The servable graph of a classifier: texts in, labels and class probabilities out."""

import tensorflow as tf

from tfllm.data.finetune_pipeline import POOLINGS, encode_classification

CLASSIFY_SIGNATURE = (tf.TensorSpec([None], tf.string, name="texts"),)


class ClassifyModule(tf.Module):
    """A `tf.Module` with the `classify` serving function of a `Classifier`.

    The function runs entirely in the graph with ops of stock TensorFlow and tensorflow-text
    (the tokenizer included), so the saved module runs in TensorFlow Serving or in a process
    that imports only `tensorflow` and `tensorflow_text`. Texts are encoded by
    `tfllm.data.finetune_pipeline.encode_classification`, the function that encoded them in
    training, so a served text reaches the model exactly as a training text did.

    Args:
        model: a `Classifier` with trained weights.
        tokenizer: the run's `tfllm.tokenizers.Tokenizer`.
        labels: the label of every class id, in id order (strings or integers).
        seq_len: int. Tokens per row, the run's `model.seq_len`.
        pooling: `"first"` or `"last"`: where the end-of-text id goes, as in training.

    Call arguments:
        classify(texts): string `(batch,)`, at least one text. Returns a dict of
            `label` string `(batch,)` (the most probable class's label, integers written as
            strings), `label_id` int32 `(batch,)`, `probabilities` float32
            `(batch, num_classes)` (softmax of the logits, in float32) and `labels` string
            `(batch, num_classes)` (the class names in id order, repeated for every row).

    `labels` is batch-major, as the `classes` of a TF Serving classification output: TF
    Serving's row format (`instances`) answers one entry per row and refuses outputs whose
    leading dimension is not the batch.

    Example:
    ```python
    run = tfllm.run.Run.open("runs/classify")
    model, _ = run.load_model()
    module = ClassifyModule(model, run.tokenizer, run.labels.labels, seq_len=run.config.model.seq_len,
                            pooling=model.pooled_position)
    module.save("export/1")
    module.classify(tf.constant(["import os"]))["label"]
    ```
    """

    def __init__(self, model, tokenizer, labels, seq_len, pooling):
        super().__init__(name="classify_module")
        labels = list(labels)
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must hold at least 2 distinct labels. Received: labels={labels!r}")
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2. Received: seq_len={seq_len!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}. Received: pooling={pooling!r}")
        self.labels = labels
        self.seq_len = seq_len
        self.pooling = pooling
        # Tracked: the tokenizer's tables and the model's variables are what the graph captures,
        # and a SavedModel only stores captures its object graph reaches.
        self.tokenizer = tokenizer
        self.model_variables = list(model.weights)
        # A bound method, not the model: an attribute holding the Keras model would save every
        # layer into the object graph, and the servable needs only the traced graph.
        self._call_model = model.__call__
        # Python strings, made a constant op inside the trace: the graph holds the names itself.
        self._label_names = [str(label) for label in labels]

    def signatures(self):
        """The signature map to save: `classify`, also `serving_default`."""
        classify = self.classify.get_concrete_function()
        return {"serving_default": classify, "classify": classify}

    def save(self, path):
        """Writes the SavedModel: the signatures, the tokenizer and the model's variables.

        The root saved is a bare module holding only what the signature captures, as
        `GenerationModule.save` does.
        """
        root = tf.Module()
        root.tokenizer = self.tokenizer
        root.model_variables = self.model_variables
        tf.saved_model.save(root, path, signatures=self.signatures())

    @tf.function(input_signature=CLASSIFY_SIGNATURE, autograph=False)
    def classify(self, texts):
        # Checked first, so an empty request answers this message instead of a shape error.
        check = tf.debugging.Assert(tf.size(texts) > 0, ["texts must hold at least one text"])
        with tf.control_dependencies([check]):
            texts = tf.identity(texts)
        inputs = encode_classification(self.tokenizer, texts, self.seq_len, self.pooling)
        logits = self._call_model(inputs, training=False)  # (batch, num_classes)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # (batch,)
        names = tf.constant(self._label_names, tf.string)  # (num_classes,)
        return {
            "label": tf.gather(names, label_id),
            "label_id": label_id,
            "probabilities": probabilities,
            "labels": tf.tile(names[None, :], tf.stack([tf.size(texts), 1])),  # (batch, num_classes)
        }
