"""`tfllm train`: train the config's `model.task` into a run directory, resuming it if it exists.

    tfllm train                                    # configs/gpt-tiny.yaml on builtin:python-docs
    tfllm train --config configs/gpt-tiny.yaml --run-dir runs/my-run train.steps=200
    tfllm train --config configs/classify-tiny.yaml train.init_from=runs/bert-tiny
    tensorboard --logdir runs/gpt-tiny/logs

or from Python: `model, tokenizer = train(load_config("configs/gpt-tiny.yaml"), "runs/demo")`.
Everything that differs between tasks is in the task's record (`tfllm.tasks.TASKS`).
"""

from tfllm.errors import TrainingInterrupted
from tfllm.generator import Generator
from tfllm.samplers import get_sampler
from tfllm.run import Run
from tfllm.tasks import TASKS, build_model
from tfllm.trainers import init_from
from tfllm.trainers.fit import compile_model, fit
from tfllm.trainers.prepare_data import prepare_data, record_lineage
from tfllm.trainers.resume import Resume
from tfllm.trainers.session import Session


def train(config, run_dir, written_keys=None):
    """Train `config` into `run_dir`; returns the trained model and tokenizer.

    `written_keys`: the dotted keys the user set (see `init_from.resolve`).
    """
    config, pretrained = init_from.resolve(config, written_keys)
    config = Resume.follow_saved(config, Run(run_dir), written_keys)
    task = TASKS[config.model.task]
    # Bad input found while the run is set up leaves nothing behind; the config written last
    # marks a run that trains (and resumes).
    with Run(run_dir).first_start():
        session = Session.start(config, run_dir, pretrained)
        source, tokenizer = prepare_data(config, session.run, task, pretrained, session.chief)
        causal = task.attends_causally(pretrained.backbone_causal if pretrained else None)
        data = task.datasets(config, source, tokenizer, session.strategy, causal)
        with session.strategy.scope():
            num_classes = source.label_map.num_classes if task.labeled else None
            model = build_model(config, tokenizer.vocabulary_size, causal, num_classes)
            if pretrained:
                init_from.load_backbone(model, pretrained, task, session.base["checkpoint"], config.train)
            compile_model(session, model)
        if session.chief and pretrained:
            session.run.save_backbone_info(pretrained.path, causal)
        session.save_config()
        if session.chief:
            record_lineage(config, session.run, pretrained, session.base["checkpoint"] if pretrained else None)
    try:
        fit(session, model, data, tokenizer.vocabulary_size)
    except TrainingInterrupted:
        # Stopped at a checkpoint it saved: a state the run resumes from, worth a manifest too.
        if session.chief:
            session.run.write_manifest()
        raise
    if session.chief:
        session.run.write_manifest()
    return model, tokenizer


def main(config, run_dir, written_keys=None):
    """`tfllm train`: train, then show what the run does (samples of a generating task)."""
    model, tokenizer = train(config, run_dir, written_keys)
    task = TASKS[config.model.task]
    if task.generates and task.read_examples is None and config.train.samples:
        print_samples(config, model, tokenizer)
    print(f"Run written to {run_dir}; try: {task.next_step.format(run_dir=run_dir)}")


SAMPLE_PROMPTS = ("The ", "def ", "This module")


def print_samples(config, model, tokenizer, prompts=SAMPLE_PROMPTS):
    """Print a few top-k samples from the trained model."""
    t, max_length = config.train, model.backbone.max_sequence_length
    # One call: compiling it with XLA would cost more than it saves, and the model may still be
    # distributed over the training strategy's devices.
    generator = Generator(model, tokenizer, max_length=max_length, jit_compile=False)
    sampler = get_sampler("sample", temperature=0.8, top_k=40, seed=t.seed)
    prompts = [prompts[i % len(prompts)] for i in range(t.samples)]
    max_new_tokens = min(t.sample_tokens, max_length - 8)
    print("Samples:")
    for prompt, completion in zip(prompts, generator.generate(prompts, max_new_tokens, sampler)):
        print(f"--- {prompt!r}\n{prompt}{completion}")
