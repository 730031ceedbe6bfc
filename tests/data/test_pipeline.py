import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.pipeline import count_tokens, lm_dataset, tokenize_ragged
from tfllm.errors import UserError

EOS = 1


class CharTokenizer:
    """Stand-in tokenizer: one id per character, code point + 4 (ids 0-3 are special)."""

    vocabulary_size = 0x110000 + 4

    def tokenize(self, strings):
        return tf.strings.unicode_decode(strings, "UTF-8") + 4


def write_shards(directory, shards):
    files = []
    for i, texts in enumerate(shards):
        files.append(str(directory / f"train-{i:05d}.tfrecord"))
        with tf.io.TFRecordWriter(files[-1]) as writer:
            for text in texts:
                writer.write(text.encode("utf-8"))
    return files


def token_stream(shards):
    """NumPy reference: every document's ids followed by EOS, in file order."""
    return np.array([t for texts in shards for text in texts for t in [ord(c) + 4 for c in text] + [EOS]])


SHARDS = [
    [f"doc {i} " + "ab" * i for i in range(7)],
    ["", "é!", "the last document of the second file"],
]


def make(files, **kwargs):
    defaults = dict(seq_len=7, batch_size=1, shuffle=False, seed=0, repeat=False, docs_per_batch=3, eos_id=EOS)
    return lm_dataset(files, CharTokenizer(), **{**defaults, **kwargs})


def test_packing_loses_no_token(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    stream = token_stream(SHARDS)
    batches = list(make(files).as_numpy_iterator())
    assert len(batches) == len(stream) // 8
    for x, y in batches:
        np.testing.assert_array_equal(x[0, 1:], y[0, :-1])
    blocks = np.concatenate([np.concatenate([x[0], y[0, -1:]]) for x, y in batches])
    np.testing.assert_array_equal(blocks, stream[: len(batches) * 8])


def test_batches_are_consecutive_blocks_and_drop_the_remainder(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    stream = token_stream(SHARDS)
    blocks = stream[: len(stream) // 6 * 6].reshape(-1, 6)
    batches = list(make(files, seq_len=5, batch_size=4).as_numpy_iterator())
    assert len(batches) == len(blocks) // 4
    for i, (x, y) in enumerate(batches):
        np.testing.assert_array_equal(x, blocks[4 * i : 4 * i + 4, :-1])
        np.testing.assert_array_equal(y, blocks[4 * i : 4 * i + 4, 1:])


@pytest.mark.parametrize("shuffle, repeat", [(False, False), (True, True)])
def test_static_shapes(tmp_path, shuffle, repeat):
    dataset = make(write_shards(tmp_path, SHARDS), seq_len=6, batch_size=3, shuffle=shuffle, repeat=repeat)
    assert dataset.element_spec == (tf.TensorSpec((3, 6), tf.int32), tf.TensorSpec((3, 6), tf.int32))


def test_count_tokens_includes_one_eos_per_document(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    assert count_tokens(files, CharTokenizer(), eos_id=EOS, docs_per_batch=2) == len(token_stream(SHARDS))


def take(files, seed, n=6):
    dataset = make(files, seq_len=5, batch_size=2, shuffle=True, repeat=True, seed=seed, shuffle_buffer=50)
    return [x for x, _ in dataset.take(n).as_numpy_iterator()]


def test_same_seed_same_batches_other_seed_other_order(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    first, again, other = take(files, 3), take(files, 3), take(files, 4)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_repeat_goes_past_one_epoch(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    one_epoch = len(token_stream(SHARDS)) // 6 // 2
    batches = list(make(files, seq_len=5, batch_size=2, repeat=True).take(3 * one_epoch).as_numpy_iterator())
    assert len(batches) == 3 * one_epoch
    stream = np.tile(token_stream(SHARDS), 4)
    blocks = stream[: 6 * 6 * one_epoch].reshape(-1, 2, 6)
    np.testing.assert_array_equal(np.stack([x for x, _ in batches]), blocks[:, :, :-1])


def test_shards_split_the_documents(tmp_path):
    # Every document is seq_len characters, so each block is one document and its EOS.
    texts = [f"d{i:03d}" for i in range(10)]
    files = write_shards(tmp_path, [texts])
    seen = []
    for index in range(2):
        dataset = make(files, seq_len=4, num_shards=2, shard_index=index)
        seen.append(["".join(chr(t - 4) for t in x[0]) for x, _ in dataset.as_numpy_iterator()])
    assert seen == [texts[0::2], texts[1::2]]


def test_default_eos_is_the_tokenizers_eos(tmp_path):
    tokenizers = pytest.importorskip("tfllm.tokenizers")
    files = write_shards(tmp_path, [["abcdef", "ghijkl"]])
    dataset = lm_dataset(files, CharTokenizer(), seq_len=6, batch_size=2, shuffle=False, seed=0, repeat=False)
    (x, y), = dataset.as_numpy_iterator()
    np.testing.assert_array_equal(y[:, -1], [tokenizers.EOS_ID, tokenizers.EOS_ID])


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.tfrecord' does not exist"):
        make([str(tmp_path / "missing.tfrecord")])


def segment_reference(tokens):
    """NumPy reference: per row, 1 + the number of EOS ids at or before each position."""
    out = np.ones_like(tokens)
    for r, row in enumerate(tokens):
        segment = 1
        for c, token in enumerate(row):
            segment += token == EOS
            out[r, c] = segment
    return out


def test_pack_adds_segment_ids_from_eos_positions(tmp_path):
    files = write_shards(tmp_path, SHARDS)
    plain = list(make(files, seq_len=9, batch_size=2).as_numpy_iterator())
    packed = list(make(files, seq_len=9, batch_size=2, pack=True).as_numpy_iterator())
    assert len(packed) == len(plain) > 2
    for (x, y), (packed_x, packed_y) in zip(plain, packed):
        np.testing.assert_array_equal(packed_x["token_ids"], x)
        np.testing.assert_array_equal(packed_y, y)
        np.testing.assert_array_equal(packed_x["segment_ids"], segment_reference(x))
    # Short documents: some rows must hold three or more documents, or the check above is weak.
    assert max(x["segment_ids"].max() for x, _ in packed) >= 3


def test_pack_segment_ids_by_hand():
    from tfllm.data.pipeline import segment_ids

    tokens = tf.constant([[5, 6, EOS, 7, EOS, EOS, 8], [EOS, 9, 9, 9, 9, 9, EOS]])
    np.testing.assert_array_equal(
        segment_ids(tokens, EOS), [[1, 1, 2, 2, 3, 4, 4], [2, 2, 2, 2, 2, 2, 3]]
    )


def test_pack_static_shapes(tmp_path):
    dataset = make(write_shards(tmp_path, SHARDS), seq_len=6, batch_size=3, pack=True)
    spec = tf.TensorSpec((3, 6), tf.int32)
    assert dataset.element_spec == ({"token_ids": spec, "segment_ids": spec}, spec)


def test_iterator_checkpoint_resumes_with_a_stateful_tokenizer(tmp_path):
    # The trained tokenizers use lookup tables, which tf.data counts as external state.
    tokenizers = pytest.importorskip("tfllm.tokenizers")
    tokenizer = tokenizers.train_tokenizer("char", [t for texts in SHARDS for t in texts], vocab_size=64)
    files = write_shards(tmp_path, SHARDS)
    dataset = lm_dataset(files, tokenizer, seq_len=5, batch_size=2, shuffle=True, seed=0, repeat=True, pack=True)
    iterator = iter(dataset)
    next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    expected = [next(iterator) for _ in range(3)]
    checkpoint.restore(path)
    for (x, y), (expected_x, expected_y) in zip([next(iterator) for _ in range(3)], expected):
        np.testing.assert_array_equal(x["token_ids"], expected_x["token_ids"])
        np.testing.assert_array_equal(y, expected_y)


def test_every_iterator_yields_the_same_shuffled_stream(tmp_path):
    # Keras makes one iterator to build the model and another to train, and a resumed run makes
    # a new one and skips into it: all must see the same batches, epoch after epoch.
    dataset = make(write_shards(tmp_path, SHARDS), seq_len=5, batch_size=2, shuffle=True, repeat=True,
                   shuffle_buffer=4)
    first, second = iter(dataset), iter(dataset)
    a = [next(first) for _ in range(20)]  # several passes over the 10 documents
    b = [next(second) for _ in range(20)]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Skipping k batches lands exactly on batch k of an unskipped iterator.
    skipped = [x for x, _ in dataset.skip(7).take(5).as_numpy_iterator()]
    np.testing.assert_array_equal(np.stack(skipped), np.stack([x.numpy() for x, _ in a[7:12]]))
    # Files are reshuffled between epochs: the stream does not simply repeat.
    assert not all(np.array_equal(a[i][0], a[i + 10][0]) for i in range(10))


class DenseTokenizer:
    """Returns a dense int64 tensor, as a tokenizer whose rows are all one length may."""

    def tokenize(self, strings):
        return tf.strings.to_number(tf.strings.split(strings).to_tensor("0"), tf.int64)


def test_tokenize_ragged_makes_int32_ragged_rows_from_either_kind_of_tokenizer():
    strings = tf.constant(["1 2", "3 4"])
    for tokenizer in (CharTokenizer(), DenseTokenizer()):
        ids = tokenize_ragged(tokenizer, strings)
        assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert tokenize_ragged(DenseTokenizer(), strings).to_list() == [[1, 2], [3, 4]]
    assert tokenize_ragged(CharTokenizer(), tf.constant(["ab", "c"])).to_list() == [[101, 102], [103]]
