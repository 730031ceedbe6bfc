"""Corpus cleaning throughput: MB/s of each cleaning step on a scaled-up built-in corpus.

The corpus is `builtin:python-docs` and `builtin:python-stdlib` (prose and code, about 12.5 MB),
copied `--copies` times; every copy after the first changes 1 word in 100 of each document,
seeded, so that copies are near-duplicates (about 0.9 Jaccard on 5-word shingles) rather
than exact ones, and one document in 20 of every copy gets an e-mail address, a phone
number, an IP address and an API key added, so that redaction has work. Each step runs alone over the whole corpus, in
one process, and reports megabytes of UTF-8 input per second (best of `--repeats`):

- normalise: `Cleaner` with Unicode, control-character and whitespace normalization only;
- personal data: `redact_personal_data`;
- blocklist: a 1,000-phrase `Blocklist` (random letter strings, so that it scans every
  document to the end), drop and mask, against the same phrases as a plain alternation
  (`(?:phrase1|phrase2|...)`) with `re.IGNORECASE` (on the first MB only: it is slow);
- quality: `QualityFilter()` with its Gopher/C4 defaults;
- exact dedupe: `Cleaner` with only `deduplicate` (BLAKE2b digests in a set);
- near dedupe: `NearDuplicateFilter` (threshold 0.8, 5-word shingles, 128 permutations), and
  its cost against the exact pass;
- the whole `Cleaner` with the config defaults, and with every step on.

Then `prepare_corpus` on `builtin:python-docs` (the default `data.path`) and
`builtin:python-stdlib`, with the default cleaner, without redaction, and with near-duplicate
removal added: the measurement behind the `data.near_duplicates` default.

    python bench/bench_cleaning.py                        # writes bench/out/cleaning.md
    python bench/bench_cleaning.py --copies 2 --out /tmp/cleaning.md
"""

import argparse
import os
import random
import re
import string
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_common import write_atomically  # noqa: E402

from tfllm.data.blocklist import Blocklist, read_phrases  # noqa: E402
from tfllm.data.builtin import iter_builtin_documents  # noqa: E402
from tfllm.data.cleaning import Cleaner  # noqa: E402
from tfllm.data.corpus import prepare_corpus  # noqa: E402
from tfllm.data.near_duplicates import NearDuplicateFilter  # noqa: E402
from tfllm.data.personal_data import redact_personal_data  # noqa: E402
from tfllm.data.quality import QualityFilter  # noqa: E402

OUT_PATH = os.path.join(REPO, "bench", "out", "cleaning.md")
PII = " Write to jane.roe{i}@example.com or call +44 20 7946 {i:04d}; server 93.184.{a}.{b}, key AKIA{key}."


def build_corpus(copies, seed=0):
    rng = random.Random(seed)
    base = [d.text for name in ("python-docs", "python-stdlib") for d in iter_builtin_documents(f"builtin:{name}")]
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(2000)]
    corpus = []
    for copy in range(copies):
        for i, text in enumerate(base):
            if copy:
                # Split at single spaces to keep the layout; change words, not indentation.
                words = text.split(" ")
                positions = [j for j, word in enumerate(words) if word]
                for j in rng.sample(positions, min(len(positions), max(1, len(positions) // 100))):
                    words[j] = rng.choice(vocabulary)
                text = " ".join(words)
            if rng.random() < 0.05:
                key = "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))
                text += PII.format(i=i % 10000, a=rng.randint(1, 254), b=rng.randint(1, 254), key=key)
            corpus.append(text)
    return corpus


def megabytes(texts):
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def best_seconds(run, texts, repeats):
    """The fastest of `repeats` passes of `run()` over all texts (`run` builds fresh state), and
    how many texts the last pass returned something other than None for."""
    times = []
    for _ in range(repeats):
        step = run()
        start = time.perf_counter()
        found = sum(step(text) is not None for text in texts)
        times.append(time.perf_counter() - start)
    return min(times), found


def blocklist_file(directory, count=1000, seed=1):
    rng = random.Random(seed)
    path = os.path.join(directory, "blocklist.txt")
    with open(path, "w") as f:
        for _ in range(count):
            f.write("".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 10))) + "\n")
    return path


def plain_alternation(path):
    phrases = sorted(read_phrases(path), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, phrases)) + r")(?!\w)", re.IGNORECASE)


def step_table(texts, repeats, tmp):
    mb = megabytes(texts)
    blocked = blocklist_file(tmp)
    normalize_only = dict(deduplicate=False, min_chars=0, redact_personal_data=False)
    steps = {
        "normalise (NFC, control chars, whitespace)": lambda: Cleaner(**normalize_only).clean,
        "personal data redaction": lambda: redact_personal_data,
        "blocklist, 1,000 phrases, drop (trie regex)": lambda: Blocklist(blocked).search,
        "blocklist, 1,000 phrases, mask (trie regex)": lambda: Blocklist(blocked, action="mask").mask,
        "quality (Gopher/C4 defaults)": lambda: QualityFilter().failed_rule,
        "exact dedupe (BLAKE2b digest set)": lambda: Cleaner(
            normalize_unicode=False, drop_control_chars=False, normalize_whitespace=False, min_chars=0,
            redact_personal_data=False).clean,
        "near dedupe (MinHash 128 perm, 5-word shingles, LSH at 0.8)": lambda: _near_step(NearDuplicateFilter()),
        "whole Cleaner, config defaults": lambda: Cleaner().clean,
        "whole Cleaner, every step on (blocklist drop)": lambda: Cleaner(
            blocklist=Blocklist(blocked), quality=QualityFilter(), near_duplicates=NearDuplicateFilter()).clean,
    }
    rows, seconds, found = [], {}, {}
    for name, make in steps.items():
        seconds[name], found[name] = best_seconds(make, texts, repeats)
        rows.append(f"| {name} | {seconds[name]:.2f} | {mb / seconds[name]:.1f} |")
        print(rows[-1], flush=True)
    # The plain alternation, on a slice: at well under 1 MB/s the whole corpus would take minutes.
    head, size = [], 0
    for text in texts:
        head.append(text)
        size += len(text)
        if size > 1_000_000:
            break
    plain = plain_alternation(blocked)
    plain_seconds, _ = best_seconds(lambda: plain.search, head, 1)
    trie_seconds, _ = best_seconds(lambda: Blocklist(blocked).search, head, repeats)
    rows.append(
        f"| blocklist, same 1,000 phrases as a plain alternation, re.IGNORECASE (first "
        f"{megabytes(head):.1f} MB) | {plain_seconds:.2f} | {megabytes(head) / plain_seconds:.2f} |"
    )
    print(rows[-1], flush=True)
    near = "near dedupe (MinHash 128 perm, 5-word shingles, LSH at 0.8)"
    exact = "exact dedupe (BLAKE2b digest set)"
    ratio = seconds[near] / seconds[exact]
    trie_ratio = plain_seconds / trie_seconds
    # `check` returns the kept document it matched, so `found` counts near-duplicates; `clean`
    # returns the kept text, so `found` counts what the exact pass keeps.
    return rows, ratio, trie_ratio, (found[near], len(texts) - found[exact])


def _near_step(near):
    counter = iter(range(10**12))
    return lambda text: near.check(text, key=next(counter))


def prepare_table(repeats, tmp):
    variants = {
        "default cleaner (redaction on, near dedupe off)": lambda: Cleaner(),
        "without personal-data redaction": lambda: Cleaner(redact_personal_data=False),
        "default + near dedupe (0.8, 5-word, 128 perm)": lambda: Cleaner(near_duplicates=NearDuplicateFilter()),
    }
    rows = []
    for corpus in ("builtin:python-docs", "builtin:python-stdlib"):
        times = {}
        for name, make in variants.items():
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                stats = prepare_corpus(corpus, os.path.join(tmp, "corpus"), cleaner=make())
                runs.append(time.perf_counter() - start)
            times[name] = min(runs)
            dropped = stats.cleaning["near_duplicate"]
            redacted = sum(stats.cleaning["personal_data"].values())
            base = times["default cleaner (redaction on, near dedupe off)"]
            rows.append(f"| {corpus} | {name} | {times[name]:.2f} | {100 * (times[name] / base - 1):+.0f}% | "
                        f"{redacted} | {dropped} |")
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the built-in corpora")
    parser.add_argument("--repeats", type=int, default=2, help="passes per step; the fastest counts")
    parser.add_argument("--out", default=OUT_PATH)
    args = parser.parse_args()
    texts = build_corpus(args.copies)
    print(f"{len(texts)} documents, {megabytes(texts):.1f} MB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows, near_ratio, trie_ratio, (near_dropped, exact_dropped) = step_table(texts, args.repeats, tmp)
        prepare_rows = prepare_table(max(args.repeats, 3), tmp)
    lines = [
        "## Corpus cleaning throughput",
        "",
        f"`python bench/bench_cleaning.py --copies {args.copies} --repeats {args.repeats}` on "
        f"{os.cpu_count()} CPU cores (shared), Python {sys.version.split()[0]}: {len(texts):,} documents, "
        f"{megabytes(texts):.1f} MB (the built-in python-docs and python-stdlib corpora, {args.copies} copies, "
        "each after the first with 1 word in 100 changed; 1 document in 20 with personal data added). "
        "Each step alone over all of it, single-threaded, best of the passes; MB of UTF-8 input per second.",
        "",
        "| step | seconds | MB/s |",
        "| --- | ---: | ---: |",
        *rows,
        "",
        f"Near-duplicate removal (MinHash, 128 permutations, 5-word shingles, LSH at Jaccard 0.8, every "
        f"candidate checked against 0.8) takes {near_ratio:.1f}x the time of the exact-match pass (a 16-byte "
        f"BLAKE2b digest per document in a set); it drops {near_dropped:,} of the {len(texts):,} documents as "
        f"near-duplicates, where the exact pass drops {exact_dropped:,}. "
        f"The trie-shaped blocklist regex is {trie_ratio:.0f}x faster "
        "than the plain alternation of the same 1,000 phrases.",
        "",
        "`prepare_corpus` (read, clean, split, write TFRecord shards), best of 3:",
        "",
        "| corpus | cleaner | seconds | vs default | redactions | near-duplicates dropped |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *prepare_rows,
        "",
    ]
    write_atomically(args.out, "\n".join(lines))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
