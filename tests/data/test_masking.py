import numpy as np
import pytest
import tensorflow as tf

from tfllm.data.masking import (
    mask_tokens,
    masked_lm_dataset,
    wordpiece_continuation_table,
    wordpiece_word_starts,
)
from tfllm.errors import UserError
from tfllm.tokenizers import EOS_ID, MASK_ID, train_tokenizer

VOCAB = 64
TEXTS = [
    "the cat sat on the mat and the dog ran to the cat",
    "a bat and a rat sat in the hat; the rat ran",
    "tomorrow the cattle return to the mountain meadow",
]


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", TEXTS, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer("wordpiece", TEXTS, vocab_size=VOCAB)


def random_ids(shape, seed=0):
    """Ids over the whole vocabulary, reserved ones (0-3) included."""
    return np.random.default_rng(seed).integers(0, VOCAB, size=shape).astype(np.int32)


def mask(ids, seed=(1, 2), rate=0.15, word_starts=None):
    out = mask_tokens(
        tf.constant(ids), seed=tf.constant(seed), mask_rate=rate, vocabulary_size=VOCAB, word_starts=word_starts
    )
    return [t.numpy() for t in out]


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masked_share_of_regular_tokens_is_the_rate(rate):
    ids = random_ids((100, 1100))
    regular = ids >= 4
    assert regular.sum() >= 100_000
    _, _, weights = mask(ids, rate=rate)
    # 100k Bernoulli draws: one standard deviation is about 0.0011 at 0.15.
    assert abs(weights[regular].mean() - rate) < 0.005


def test_chosen_tokens_split_80_10_10():
    ids = random_ids((100, 1100))
    masked, labels, weights = mask(ids)
    chosen = weights == 1.0
    to_mask = masked[chosen] == MASK_ID
    kept = masked[chosen] == ids[chosen]
    # A random replacement equal to the original (1 in 60) counts as kept; well inside the tolerance.
    replaced = ~to_mask & ~kept
    assert abs(to_mask.mean() - 0.8) < 0.02
    assert abs(replaced.mean() - 0.1) < 0.02
    assert abs(kept.mean() - 0.1) < 0.02
    np.testing.assert_array_equal(labels, ids)


def test_reserved_ids_never_chosen_nor_used_as_replacement():
    ids = random_ids((50, 1000))
    masked, _, weights = mask(ids, rate=0.5)
    assert weights[ids < 4].sum() == 0
    # Positions not chosen keep their id; chosen ones are the mask id or a regular id.
    np.testing.assert_array_equal(masked[weights == 0], ids[weights == 0])
    changed = masked[weights == 1]
    replacements = changed[changed != MASK_ID]
    assert replacements.min() >= 4 and replacements.max() < VOCAB
    # Every regular id shows up as a replacement: they come from the whole range.
    assert len(np.unique(replacements)) == VOCAB - 4
    assert set(np.unique(weights)) == {0.0, 1.0}


def test_same_seed_same_masks_other_seed_other_masks():
    ids = random_ids((4, 64))
    first, again, other = mask(ids, seed=(7, 0)), mask(ids, seed=(7, 0)), mask(ids, seed=(7, 1))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])


def words_of(starts):
    """Word index of each token of a row: the number of word starts up to it."""
    return np.cumsum(starts, axis=1)


def wordpiece_rows(wordpiece, rows, length):
    """Rows cut from the tokenized TEXTS repeated; rows may start inside a word."""
    stream = np.concatenate([np.append(ids, EOS_ID) for ids in wordpiece.tokenize(TEXTS).numpy()])
    return np.resize(stream, rows * length).reshape(rows, length).astype(np.int32)


def test_word_starts_follow_the_continuation_pieces(wordpiece):
    table = wordpiece_continuation_table(wordpiece)
    ids = wordpiece_rows(wordpiece, 3, 40)
    starts = wordpiece_word_starts(tf.constant(ids), table).numpy()
    expected = np.array([[not wordpiece.id_to_token(int(i)).startswith("##") for i in row] for row in ids])
    np.testing.assert_array_equal(starts, expected)
    assert (~starts).sum() > 10  # the tiny vocabulary splits words into pieces


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(wordpiece):
    ids = wordpiece_rows(wordpiece, 100, 1100)
    starts = wordpiece_word_starts(tf.constant(ids), wordpiece_continuation_table(wordpiece)).numpy()
    _, _, weights = mask(ids, word_starts=tf.constant(starts), seed=(3, 4))
    regular = ids >= 4
    words = words_of(starts)
    multi_piece_chosen = 0
    for row in range(ids.shape[0]):
        for word in np.unique(words[row]):
            in_word = (words[row] == word) & regular[row]
            if not in_word.any():
                continue
            word_weights = weights[row, in_word]
            assert word_weights.min() == word_weights.max(), f"row {row} word {word} partly masked"
            multi_piece_chosen += in_word.sum() > 1 and word_weights[0] == 1
    assert multi_piece_chosen > 1000
    # Words, not tokens, are drawn: about 36k words of 3 pieces on average give one standard
    # deviation of about 0.002, so the band is wider than for tokens.
    assert regular.sum() >= 100_000
    assert abs(weights[regular].mean() - 0.15) < 0.01


def write_shards(directory, texts):
    path = str(directory / "train-00000.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for text in texts:
            writer.write(text.encode("utf-8"))
    return [path]


def make(files, tokenizer, **kwargs):
    options = dict(seq_len=12, batch_size=2, mask_rate=0.3, shuffle=False, seed=0, repeat=False)
    return masked_lm_dataset(files, tokenizer, **{**options, **kwargs})


def test_dataset_y_is_the_token_stream_and_x_differs_only_where_weighted(tmp_path, char_tokenizer):
    files = write_shards(tmp_path, TEXTS)
    stream = np.concatenate([np.append(ids, EOS_ID) for ids in char_tokenizer.tokenize(TEXTS).numpy()])
    blocks = stream[: len(stream) // 12 * 12].reshape(-1, 12)
    batches = list(make(files, char_tokenizer).as_numpy_iterator())
    assert len(batches) == len(blocks) // 2
    for i, (x, y, weights) in enumerate(batches):
        assert set(x) == {"token_ids", "padding_mask"}
        np.testing.assert_array_equal(y, blocks[2 * i : 2 * i + 2])
        np.testing.assert_array_equal(x["token_ids"][weights == 0], y[weights == 0])
        np.testing.assert_array_equal(x["padding_mask"], np.ones((2, 12)))
    assert sum(w.sum() for _, _, w in batches) > 0


def test_dataset_pack_adds_segment_ids(tmp_path, char_tokenizer):
    dataset = make(write_shards(tmp_path, TEXTS), char_tokenizer, pack=True, seq_len=30)
    spec = tf.TensorSpec((2, 30), tf.int32)
    assert dataset.element_spec == (
        {"token_ids": spec, "padding_mask": spec, "segment_ids": spec}, spec, tf.TensorSpec((2, 30), tf.float32)
    )
    for x, y, _ in dataset.as_numpy_iterator():
        expected = 1 + np.cumsum(y == EOS_ID, axis=1)
        np.testing.assert_array_equal(x["segment_ids"], expected)


def identical_blocks(tmp_path, tokenizer, **kwargs):
    """Every block is the same document and its EOS, so only the masks tell batches apart."""
    files = write_shards(tmp_path, ["the cat sat"])
    dataset = make(files, tokenizer, seq_len=12, repeat=True, **kwargs)
    return list(dataset.take(3).as_numpy_iterator())


def test_masks_differ_between_batches_and_repeat_with_the_seed(tmp_path, char_tokenizer):
    first = identical_blocks(tmp_path, char_tokenizer, seed=5)
    again = identical_blocks(tmp_path, char_tokenizer, seed=5)
    other = identical_blocks(tmp_path, char_tokenizer, seed=6)
    np.testing.assert_array_equal(first[0][1], first[1][1])
    assert not np.array_equal(first[0][2], first[1][2])
    for (x, _, w), (x_again, _, w_again) in zip(first, again):
        np.testing.assert_array_equal(x["token_ids"], x_again["token_ids"])
        np.testing.assert_array_equal(w, w_again)
    assert not np.array_equal(np.stack([w for *_, w in first]), np.stack([w for *_, w in other]))


def test_iterator_checkpoint_resumes_the_mask_sequence(tmp_path, char_tokenizer):
    files = write_shards(tmp_path, ["the cat sat"])
    iterator = iter(make(files, char_tokenizer, seq_len=12, repeat=True))
    previous = next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    expected = next(iterator)
    checkpoint.restore(path)
    resumed = next(iterator)
    np.testing.assert_array_equal(resumed[2], expected[2])
    np.testing.assert_array_equal(resumed[0]["token_ids"], expected[0]["token_ids"])
    assert not np.array_equal(previous[2], expected[2])


def test_whole_word_dataset_masks_whole_words(tmp_path, wordpiece):
    dataset = make(write_shards(tmp_path, TEXTS * 4), wordpiece, whole_word=True, seq_len=16, mask_rate=0.4)
    table = wordpiece_continuation_table(wordpiece)
    chosen_pieces = 0
    for _, y, weights in dataset.as_numpy_iterator():
        words = words_of(~table[y])
        for row in range(y.shape[0]):
            for word in np.unique(words[row]):
                in_word = (words[row] == word) & (y[row] >= 4)
                if in_word.any():
                    assert weights[row, in_word].min() == weights[row, in_word].max()
        chosen_pieces += int(table[y][weights == 1].sum())
    assert chosen_pieces > 0  # continuation pieces were chosen along with their words


def test_whole_word_needs_wordpiece(tmp_path, char_tokenizer):
    with pytest.raises(UserError, match=r"data\.whole_word_masking.*data\.tokenizer=char"):
        make(write_shards(tmp_path, TEXTS), char_tokenizer, whole_word=True)
