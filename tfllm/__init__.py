"""tfllm: train, evaluate and serve language models with TensorFlow and Keras."""

__version__ = "0.1.0"
