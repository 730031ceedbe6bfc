from tfllm.callbacks.checkpointer import Checkpointer, restore_weights, training_checkpoint
from tfllm.callbacks.divergence import StopOnNonFiniteLoss
from tfllm.callbacks.early_stopping import ResumableEarlyStopping, early_stopping_state
from tfllm.callbacks.metrics_logger import MetricsLogger
from tfllm.callbacks.progress_lines import ProgressLines, fit_verbosity, use_progress_lines
from tfllm.callbacks.worker_signals import StopTogetherOnSignal
