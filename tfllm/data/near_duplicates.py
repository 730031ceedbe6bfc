"""Near-duplicate removal: MinHash signatures of word n-grams, indexed by LSH (`datasketch`)."""

from typing import Optional

import numpy as np

# A polynomial rolling hash over the bytes of the text, modulo 2**64 (numpy's wrapping uint64
# arithmetic). Any odd base is invertible modulo 2**64, which lets a span's hash be computed
# from two prefix hashes without depending on where the span starts.
_BASE = 0x100000001B3
_BASE_INVERSE = pow(_BASE, -1, 2**64)
# Rows of shingles per block of the (shingles, num_perm) product: about 1 MB at num_perm=128,
# so a 10 MB file does not need a 10 GB temporary.
_BLOCK = 2048


class NearDuplicateFilter:
    """Finds documents whose word n-grams mostly repeat a document already seen.

    A document's shingles are its overlapping `ngram`-word sequences, after lowercasing and
    collapsing whitespace (a document with fewer words is one shingle). The estimated Jaccard
    similarity of two documents is the share of equal MinHash values; an LSH index proposes
    candidates and each is checked against `threshold`, so `threshold` means what it says
    rather than the index's S-curve.

    The signature uses `datasketch`'s "affine32" scheme (MurmurHash3 finalizer, then
    `a * h + b` modulo 2**32 per permutation) with the permutations of `MinHash(num_perm,
    seed)`; it is computed with numpy over all shingles at once, as `MinHash.update_batch`
    with identity hashing would give, at a small fraction of the cost of hashing every
    shingle in Python. Shingles are hashed by a rolling polynomial hash, so the result is the
    same in every process (Python's `hash` of a string is not).

    Memory grows by about 2 KB per kept document (signature and index entries). The filter is
    stateful: use one per corpus.

    Args:
        threshold: estimated Jaccard similarity, in (0, 1], at or above which a document is a
            near-duplicate of a kept one.
        ngram: words per shingle.
        num_perm: MinHash permutations; the estimate's standard error is about
            `sqrt(J * (1 - J) / num_perm)`, 0.035 at J=0.8 with 128.
        seed: seed of the permutations.

    Example:

    >>> near = NearDuplicateFilter(threshold=0.8, ngram=3)
    >>> text = "the quick brown fox jumps over the lazy dog " * 5
    >>> near.check(text, key=0) is None  # first seen: kept and indexed
    True
    >>> kept_key, jaccard = near.check(text + "today", key=1)  # 9 shingles of 10 shared
    >>> kept_key, round(jaccard, 1)
    (0, 0.9)
    """

    def __init__(self, *, threshold: float = 0.8, ngram: int = 5, num_perm: int = 128, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1]. Received: threshold={threshold!r}")
        if ngram < 1:
            raise ValueError(f"ngram must be positive. Received: ngram={ngram!r}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2. Received: num_perm={num_perm!r}")
        self.threshold = threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        # Imported here: datasketch loads scipy, half a second that every `import tfllm.data`
        # would pay when near-duplicate removal is off, as it is by default.
        from datasketch import LeanMinHash, MinHash, MinHashLSH

        self._lean_minhash = LeanMinHash
        self._a, self._b = MinHash(num_perm=num_perm, seed=seed).permutations
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict = {}

    def get_config(self) -> dict:
        return {"threshold": self.threshold, "ngram": self.ngram, "num_perm": self.num_perm, "seed": self.seed}

    def check(self, text: str, key) -> Optional[tuple]:
        """`(kept_key, jaccard)` of the most similar kept document at or above the threshold;
        otherwise `None`, and `text` is kept under `key` (a hashable, unique per document)."""
        hashes = shingle_hashes(text, self.ngram)
        if hashes.size == 0:
            return None
        signature = self.signature(hashes)
        minhash = self._lean_minhash(seed=self.seed, hashvalues=signature, scheme="affine32")
        best = None
        for candidate in self._lsh.query(minhash):
            jaccard = float(np.mean(self._signatures[candidate] == signature))
            if jaccard >= self.threshold and (best is None or jaccard > best[1]):
                best = (candidate, jaccard)
        if best is not None:
            return best
        self._lsh.insert(key, minhash, check_duplication=False)
        self._signatures[key] = signature
        return None

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The MinHash values (uint32, `num_perm`) of a set of 32-bit shingle hashes."""
        hashes = _fmix32(np.unique(hashes))
        signature = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        for start in range(0, hashes.size, _BLOCK):
            block = hashes[start : start + _BLOCK, None]  # (shingles, 1)
            np.minimum(signature, (block * self._a + self._b).min(axis=0), out=signature)
        return signature


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """32-bit hashes (uint32) of the `ngram`-word shingles of `text`, lowercased, in order."""
    data = np.frombuffer(" ".join(text.lower().split()).encode("utf-8"), dtype=np.uint8)
    length = data.size
    if length == 0:
        return np.zeros(0, dtype=np.uint32)
    powers = np.full(length + 1, _BASE, dtype=np.uint64)
    powers[0] = 1
    powers = np.cumprod(powers)  # BASE**i, wrapping
    inverse_powers = np.full(length + 1, _BASE_INVERSE, dtype=np.uint64)
    inverse_powers[0] = 1
    inverse_powers = np.cumprod(inverse_powers)
    prefix = np.zeros(length + 1, dtype=np.uint64)
    # +1 so that a NUL byte still changes the hash.
    np.cumsum((data + np.uint64(1)) * powers[:-1], out=prefix[1:])
    spaces = np.flatnonzero(data == 32)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [length]))
    count = max(starts.size - ngram + 1, 1)
    starts, ends = starts[:count], ends[min(ngram, ends.size) - 1 :][:count]
    # The span's hash as if it started at 0: the same shingle hashes the same anywhere.
    spans = (prefix[ends] - prefix[starts]) * inverse_powers[starts]
    return (spans >> np.uint64(32)).astype(np.uint32) ^ spans.astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before its permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))
