"""BERT's pooler: imported from a checkpoint that has one, read by the classifier as
`BertForSequenceClassification` reads it, and written back with the checkpoint."""

import numpy as np
import pytest
from safetensors import safe_open

from tests.huggingface.conftest import VOCAB, torch, transformers
from tests.huggingface.test_checkpoint import IDS, MASK, reference_logits
from tests.huggingface.test_import_checkpoint import with_a_vocabulary
from tfllm import cli
from tfllm.huggingface import load_model, save_pretrained
from tfllm.models import Classifier
from tfllm.run import Run
from tfllm.tasks import TASKS, build_model
from tfllm.trainers import init_from

REAL = MASK.astype(bool)
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory):
    """(directory, model): a tiny `BertForPreTraining` (masked-LM head, pooler and next-sentence
    head), sized as the conftest's BERT, saved by `transformers`."""
    directory = tmp_path_factory.mktemp("hf") / "bert_pretraining"
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, type_vocab_size=2, initializer_range=0.3)).eval()
    with torch.no_grad():
        # Biases start at 0 and norm scales at 1: moved, so that a misplaced one shows.
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.3 * torch.randn_like(parameter))
        # A pooler kernel of the initializer's 0.3 saturates the tanh, which would hide errors in
        # what goes into it; a fifth of it keeps most outputs on the slope.
        model.bert.pooler.dense.weight.mul_(0.2)
    model.save_pretrained(directory)
    return str(directory), model


def inputs():
    return {"token_ids": IDS, "padding_mask": MASK}


def torch_inputs():
    return dict(input_ids=torch.tensor(IDS, dtype=torch.long), attention_mask=torch.tensor(MASK))


def reference_pooled(directory):
    with torch.no_grad():
        return transformers.BertModel.from_pretrained(directory).eval()(**torch_inputs()).pooler_output.numpy()


def pooled(backbone):
    """The pooler's output at the first position, where BERT reads `[CLS]`."""
    return backbone.pooler_dense(backbone(inputs())[:, 0]).numpy()


def sequence_classification(directory):
    """`BertForSequenceClassification` of `directory`, its new class layer drawn of order 1."""
    torch.manual_seed(1)
    with torch.no_grad():
        model = transformers.BertForSequenceClassification.from_pretrained(directory, num_labels=NUM_CLASSES).eval()
        model.classifier.weight.normal_(0, 0.5)
        model.classifier.bias.normal_(0, 0.5)
    return model


def with_class_layer(classifier, reference):
    """`classifier` (a tfllm `Classifier`) with the class layer of `reference`."""
    dense = classifier.output_dense
    dense.kernel.assign(reference.classifier.weight.detach().numpy().T)
    dense.bias.assign(reference.classifier.bias.detach().numpy())
    return classifier


def test_the_pooler_is_imported_and_pools_as_transformers_does(pretraining):
    directory, reference = pretraining
    lm = load_model(directory)
    assert lm.backbone.pooler and lm.backbone.get_config()["pooler"] is True
    want = reference_pooled(directory)
    assert 0.1 < np.abs(want).max() < 0.95  # off zero and off the tanh's flat ends
    np.testing.assert_allclose(pooled(lm.backbone), want, atol=1e-4, rtol=0)
    # The masked-LM head reads the hidden states as before.
    with torch.no_grad():
        logits = reference(**torch_inputs()).prediction_logits.numpy()
    np.testing.assert_allclose(lm(inputs()).numpy()[REAL], logits[REAL], atol=1e-4, rtol=0)


def test_a_classifier_reads_cls_through_the_pooler_as_bert_for_sequence_classification(pretraining):
    directory, _ = pretraining
    reference = sequence_classification(directory)
    backbone = load_model(directory).backbone
    classifier = with_class_layer(Classifier(backbone, num_classes=NUM_CLASSES), reference)
    with torch.no_grad():
        want = reference(**torch_inputs()).logits.numpy()
    np.testing.assert_allclose(classifier(inputs()).numpy(), want, atol=1e-4, rtol=0)


def test_the_pooler_trains_under_a_classifier_and_is_carried_under_a_masked_lm(pretraining):
    """A head that does not read the pooler leaves it frozen: it would have no gradient."""
    lm = load_model(pretraining[0])
    pooler = [v.path for v in lm.backbone.pooler_dense.weights]
    assert pooler and not set(pooler) & {v.path for v in lm.trainable_weights}
    lm.compile(optimizer="sgd", grad_accum_steps=3)  # accumulation fails on a weight without a gradient
    lm.train_on_batch(inputs(), IDS, sample_weight=MASK.astype("float32"))
    classifier = Classifier(lm.backbone, num_classes=NUM_CLASSES)
    assert set(pooler) <= {v.path for v in classifier.trainable_weights}


def test_export_writes_the_pooler_back(pretraining, tmp_path):
    directory, reference = pretraining
    out = str(tmp_path / "out")
    save_pretrained(load_model(directory), out)
    np.testing.assert_allclose(reference_pooled(out), reference_pooled(directory), atol=1e-5, rtol=0)
    reloaded = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    with torch.no_grad():
        want = reference(**torch_inputs()).prediction_logits.numpy()
    np.testing.assert_allclose(reference_logits(reloaded, IDS, MASK)[REAL], want[REAL], atol=1e-5, rtol=0)
    assert load_model(out).backbone.pooler


def test_a_masked_lm_checkpoint_without_a_pooler_imports_and_exports_without_one(checkpoints, tmp_path):
    directory, reference = checkpoints["bert"]
    lm = load_model(directory)
    assert not lm.backbone.pooler and lm.backbone.pooler_dense is None
    out = str(tmp_path / "out")
    save_pretrained(lm, out)
    with safe_open(f"{out}/model.safetensors", "np") as f:
        assert not [name for name in f.keys() if "pooler" in name]


def test_classify_from_an_imported_run_reads_the_pooler(pretraining, tmp_path):
    """`tfllm import` writes `model.pooler: true`; a classify model built from that config takes
    the run's pooler with its backbone and gives `BertForSequenceClassification`'s logits."""
    directory, _ = pretraining
    run_dir = str(tmp_path / "bert")
    assert cli.main(["import", with_a_vocabulary(directory, tmp_path), "--run-dir", run_dir]) == 0
    pretrained = Run.open(run_dir)
    assert pretrained.config.model.pooler is True
    config = pretrained.config.replace({"model.task": "classify"})
    classifier = build_model(config, VOCAB, causal=False, num_classes=NUM_CLASSES)
    init_from.load_backbone(classifier, pretrained, TASKS["classify"])
    reference = sequence_classification(directory)
    with torch.no_grad():
        want = reference(**torch_inputs()).logits.numpy()
    np.testing.assert_allclose(with_class_layer(classifier, reference)(inputs()).numpy(), want, atol=1e-4, rtol=0)
