"""`tfllm prepare`: the data half of `tfllm train` on its own, into the run dir a later train uses.

    tfllm prepare --config configs/gpt-tiny.yaml --run-dir runs/big data.path=corpus/ data.tokenizer=char
    tfllm train --config configs/gpt-tiny.yaml --run-dir runs/big data.path=corpus/ data.tokenizer=char

It takes train's arguments. A task that trains on raw text (causal_lm, masked_lm) reads, cleans
and splits `data.path` into RUN_DIR/corpus/ (TFRecord shards and stats.json), showing documents
and megabytes read and their rates, and trains the tokenizer on the training split. A task that
trains on labeled examples (classify, sft, seq2seq) reads and splits its examples, which checks
them, and writes the tokenizer and, for classify, labels.json; the examples themselves are kept
nowhere, and train reads them again. Both write the run's config.yaml.

`tfllm train` on the run dir then reuses the corpus and tokenizer, as it does when a run is
started again before its first checkpoint, and refuses a config whose data keys (or task) differ
from the prepared ones; model and training keys may still change.
"""

from tfllm.data.read_progress import ReadProgress
from tfllm.run import Run
from tfllm.tasks import TASKS
from tfllm.trainers import init_from
from tfllm.trainers.prepare_data import prepare_data, record_lineage
from tfllm.trainers.resume import Resume


def prepare(config, run_dir, written_keys=None, progress=None):
    """Prepare the data of `config` into `run_dir`; returns `prepare_data`'s `(source, tokenizer)`.

    `written_keys`: the dotted keys the user set (see `init_from.resolve`); `progress`: a
    `ReadProgress` (default: one on standard output).
    """
    config, pretrained = init_from.resolve(config, written_keys)
    run = Run(run_dir)
    config = Resume.follow_saved(config, run, written_keys)
    # Refuses a run dir that holds a run of other data, as `tfllm train` does.
    resume = Resume.find(config, run)
    task = TASKS[config.model.task]
    with run.first_start():
        run.create()
        # First, unlike train: whatever an interrupted prepare leaves is then known to come from
        # these data keys, and a later train completes it or refuses other keys. Bad input
        # still removes it (`first_start`). A run that has a config keeps it.
        if not run.has_config:
            run.save_config(config)
        source, tokenizer = prepare_data(config, run, task, pretrained, progress=progress or ReadProgress())
        # The checkpoint train starts from too (`init_from.base_checkpoint`): the lineage is the same.
        record_lineage(config, run, pretrained,
                       init_from.base_checkpoint(pretrained, resume, config.train.encrypt_key_file))
    # A prepared run dir verifies (`tfllm verify`) as a trained one does.
    run.write_manifest()
    return source, tokenizer


def main(config, run_dir, written_keys=None):
    """`tfllm prepare`: prepare, then say what was written and how to train on it."""
    prepare(config, run_dir, written_keys)
    task = TASKS[config.model.task]
    if task.read_examples is None:
        written = "corpus/, tokenizer/ and config.yaml"
    elif task.labeled:
        written = "tokenizer/, labels.json and config.yaml (train reads the examples again)"
    else:
        written = "tokenizer/ and config.yaml (train reads the examples again)"
    print(f"Prepared {written} (with lineage.json and manifest.json) in {run_dir}; train with `tfllm train --run-dir {run_dir}` "
          "and the same --config and data keys")
