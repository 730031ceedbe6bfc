from tfllm.callbacks.checkpointer import Checkpointer, latest_checkpoint
from tfllm.callbacks.metrics_logger import MetricsLogger
