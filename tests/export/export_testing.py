"""The tiny run every test of export/ shares, and the prompts they send it."""

# A char model with a 32-token context, trained a few steps at a tiny learning rate: its
# greedy continuations stay varied (a model trained longer on this corpus only writes spaces),
# and the run takes seconds.
TINY = [
    "data.tokenizer=char", "data.vocab_size=64",
    "model.num_layers=2", "model.num_heads=2", "model.hidden_dim=16", "model.intermediate_dim=32",
    "model.seq_len=32", "train.batch_size=8", "train.steps=4", "train.eval_every=4",
    "train.eval_batches=1", "train.log_every=2", "train.warmup_steps=1", "train.learning_rate=1e-5",
    "train.min_learning_rate=1e-6", "train.samples=1", "train.sample_tokens=4", "train.precision=float32",
]
MAX_LENGTH = 32
# Prompts of several lengths: empty, unknown characters, and one longer than the context,
# which both paths must cut from the left.
PROMPTS = ["def f(x):", "", "The é€ ", "import os\n" * 5]
