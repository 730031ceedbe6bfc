import numpy as np
import pytest
from datasketch import MinHash

from tfllm.data.near_duplicates import NearDuplicateFilter, shingle_hashes

# About 250 words of prose; the near copy below changes two of them.
ORIGINAL = (
    "The reading room of the old library opens at nine in the morning, and by half past nine most "
    "of the long oak tables are taken. Students come for the quiet and for the light, which falls "
    "from tall windows on the east side and moves slowly across the floor as the day goes on. "
    "Visitors are asked to leave their bags in the lockers by the entrance, to write in pencil "
    "rather than ink, and to handle the older volumes with the foam supports that lie in a basket "
    "beside the issue desk. Books printed before the end of the eighteenth century must be read "
    "in the separate rare books room, where a librarian sits at the door and notes the time each "
    "reader arrives and leaves. The catalogue was moved to a computer system twenty years ago, but "
    "the wooden card drawers still stand along the north wall, and some readers prefer them, "
    "because a drawer shows the neighbours of the book they came for. On the first Saturday of "
    "every month the library runs a tour of the stacks, the binding workshop and the map room, "
    "and the tour ends in the small garden behind the building, where tea is served in summer. "
    "The garden was planted by a former head librarian who believed that readers needed somewhere "
    "to rest their eyes, and the bench under the pear tree carries a plaque with her name and the "
    "years she served the library. Members may borrow up to six books at a time for three weeks."
)
NEAR_COPY = ORIGINAL.replace("half past nine", "half past ten").replace("six books", "eight books")
# The same topic in other words.
SAME_TOPIC = (
    "Our town library keeps a large reading room where people study from the morning until the "
    "evening. Bags go into lockers at the door, pencils are preferred over pens, and fragile old "
    "books are read on foam cushions under the eye of a librarian. The card catalogue was replaced "
    "by computers long ago, although the old drawers remain for anyone who likes to browse. Once a "
    "month there is a guided visit behind the scenes that finishes with tea in the garden, near a "
    "pear tree planted by a librarian who cared about tired eyes. Members can take out several "
    "books at once and keep them for a few weeks before they have to bring them back."
)


def exact_jaccard(a, b, ngram):
    x, y = set(shingle_hashes(a, ngram).tolist()), set(shingle_hashes(b, ngram).tolist())
    return len(x & y) / len(x | y)


def test_a_few_changed_words_are_a_near_duplicate_and_the_same_topic_is_not():
    near = NearDuplicateFilter(threshold=0.8)
    assert near.check(ORIGINAL, key="original") is None
    kept_key, jaccard = near.check(NEAR_COPY, key="copy")
    assert kept_key == "original"
    assert jaccard >= 0.8 and abs(jaccard - exact_jaccard(ORIGINAL, NEAR_COPY, 5)) < 0.1
    assert near.check(SAME_TOPIC, key="topic") is None
    assert exact_jaccard(ORIGINAL, SAME_TOPIC, 5) < 0.05


def numbered_words(first, last):
    return " ".join(f"w{i}" for i in range(first, last))


@pytest.mark.parametrize("threshold, dropped", [(0.6, True), (0.85, False)])
def test_a_pair_near_the_threshold_follows_the_threshold(threshold, dropped):
    # Word sets 0..99 and 15..114: exact Jaccard 85 / 115 = 0.74.
    a, b = numbered_words(0, 100), numbered_words(15, 115)
    assert exact_jaccard(a, b, 1) == pytest.approx(85 / 115)
    near = NearDuplicateFilter(threshold=threshold, ngram=1)
    assert near.check(a, key=0) is None
    found = near.check(b, key=1)
    assert (found is not None) == dropped
    if dropped:
        assert found[0] == 0 and abs(found[1] - 85 / 115) < 0.1


def test_signature_is_datasketch_minhash_of_the_same_hashes():
    near = NearDuplicateFilter(num_perm=64, seed=3)
    hashes = shingle_hashes(ORIGINAL, 5)
    reference = MinHash(num_perm=64, seed=3, hashfunc=lambda h: h)
    reference.update_batch(hashes.tolist())
    np.testing.assert_array_equal(near.signature(hashes), reference.hashvalues)


def test_shingles_ignore_case_and_whitespace_and_not_position():
    assert shingle_hashes("A  b\nc d", 2).tolist() == shingle_hashes("a b c D", 2).tolist()
    twice = shingle_hashes("x y z x y", 2).tolist()
    assert twice[0] == twice[3] and len(set(twice)) == 3
    # Fewer words than the n-gram: one shingle, the whole text; no words, none.
    assert len(shingle_hashes("just three words", 5)) == 1
    assert len(shingle_hashes(" \n ", 5)) == 0


def reference_shingle_hashes(text, ngram):
    """The polynomial hash, one shingle at a time in plain Python integers."""
    words = text.lower().split()
    hashes = []
    for i in range(max(len(words) - ngram + 1, 1)):
        data = " ".join(words[i : i + ngram]).encode("utf-8")
        h = sum((byte + 1) * 0x100000001B3**j for j, byte in enumerate(data)) % 2**64
        hashes.append((h >> 32) ^ (h & 0xFFFFFFFF))
    return hashes


@pytest.mark.parametrize("text", ["the quick brown fox", "Zürich, naïve café\tand \x00 bytes", ORIGINAL[:300]])
def test_shingle_hashes_match_a_plain_python_reference(text):
    # Not Python's `hash` of a str, which changes from one process to the next.
    assert shingle_hashes(text, 3).tolist() == reference_shingle_hashes(text, 3)


def test_dropped_documents_are_not_indexed_and_empty_ones_are_kept():
    near = NearDuplicateFilter(threshold=0.8)
    assert near.check(ORIGINAL, key=0) is None
    assert near.check(NEAR_COPY, key=1) == near.check(NEAR_COPY, key=2)  # both match key 0, not 1
    assert near.check("", key=3) is None and near.check("", key=4) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": 0.0}, "threshold must be in"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"ngram": 0}, "ngram must be positive"),
        ({"num_perm": 1}, "num_perm must be at least 2"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NearDuplicateFilter(**kwargs)


def test_get_config_round_trips():
    near = NearDuplicateFilter(threshold=0.7, ngram=3, num_perm=32, seed=5)
    assert NearDuplicateFilter(**near.get_config()).get_config() == near.get_config()


def test_lsh_candidates_below_the_threshold_are_kept():
    # LSH bands tuned for 0.8 also return many pairs a little below it as candidates; each must
    # be checked against the threshold. 40 pairs at an exact Jaccard of 84 / 116 = 0.72 (ngram 1:
    # word sets 0..99 and 16..115, each pair on words of its own); without the check 7 are dropped.
    near = NearDuplicateFilter(threshold=0.8, ngram=1)
    dropped = 0
    for pair in range(40):
        base = pair * 1000
        a, b = numbered_words(base, base + 100), numbered_words(base + 16, base + 116)
        assert abs(exact_jaccard(a, b, 1) - 84 / 116) < 1e-9
        assert near.check(a, key=("a", pair)) is None
        dropped += near.check(b, key=("b", pair)) is not None
    assert dropped == 0
