from tfllm.callbacks.checkpointer import Checkpointer, latest_checkpoint, restore_weights, training_checkpoint
from tfllm.callbacks.divergence import StopOnNonFiniteLoss
from tfllm.callbacks.early_stopping import ResumableEarlyStopping, early_stopping_state
from tfllm.callbacks.metrics_logger import MetricsLogger
