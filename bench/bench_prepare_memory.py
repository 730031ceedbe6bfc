"""`tfllm prepare` on generated corpora of growing size: peak memory stays flat, and its throughput.

For each size a seeded generator writes a text corpus (blank-line separated documents of 1-12 KB,
each a numbered, random draw of sentences from a fixed pool, one in 20 with a sentence that is
not ASCII: no two alike, so deduplication keeps them all) to a temporary directory; `tfllm prepare` (char
tokenizer, default cleaning) then runs on it in a process of its own, and `os.wait4` gives that
process's peak resident memory. The corpus and the prepared run are deleted before the next size.
Documents/s and MB/s are the ones `tfllm prepare` prints for reading, cleaning and writing the
shards; the wall time covers the whole command (TensorFlow's start and the tokenizer as well).

    python bench/bench_prepare_memory.py                       # 0.001, 0.1, 0.5 and 1 GB
    python bench/bench_prepare_memory.py --sizes-gb 0.01,0.05 --out /tmp/prepare.md
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench_common import write_atomically  # noqa: E402

OUT_PATH = os.path.join(REPO, "bench", "out", "prepare_memory.md")
SUMMARY = re.compile(r"^Read ([\d,]+) documents \(([\d.,]+) MB\) in ([\d.]+) s: ([\d,]+) documents/s, ([\d.,]+) MB/s$",
                     re.MULTILINE)
OVERRIDES = ["data.blank_line_documents=true", "data.tokenizer=char", "data.vocab_size=256", "data.val_fraction=0.01"]


# One document in NON_ASCII_EVERY carries a sentence that is not ASCII: cleaning a str that is
# not ASCII takes a slower path through CPython (`str.translate`), which a corpus of English text
# meets now and then.
NON_ASCII_EVERY = 20
NON_ASCII = "Caf\u00e9 na\u00efve Z\u00fcrich \u4e2d\u6587 \u2014 d\u00e9j\u00e0 vu."


def sentence_pool(rng, size=20_000):
    """`size` sentences of 5-18 words from a fixed made-up vocabulary of ASCII words."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "de", "va", "zu", "qe", "ya", "be", "or"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)})
    return [" ".join(rng.choices(words, k=rng.randint(5, 18))).capitalize() + "." for _ in range(size)]


def write_corpus(path, target_bytes, seed=0):
    """Blank-line separated documents until the file holds `target_bytes`; returns the documents written."""
    rng = random.Random(seed)
    pool = sentence_pool(rng)
    written = documents = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target_bytes:
            sentences = rng.choices(pool, k=rng.randint(10, 130))
            if documents % NON_ASCII_EVERY == 0:
                sentences.append(NON_ASCII)
            lines = [" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6)]
            text = f"Document {documents}.\n" + "\n".join(lines) + "\n\n"
            written += f.write(text)  # characters; the file size is measured below
            documents += 1
            if documents % 1000 == 0:
                written = f.tell()
    return documents


def measure(size_gb, work_dir):
    corpus = os.path.join(work_dir, "corpus.txt")
    run_dir = os.path.join(work_dir, "run")
    start = time.perf_counter()
    written = write_corpus(corpus, int(size_gb * 1e9))
    generated = time.perf_counter() - start
    file_bytes = os.path.getsize(corpus)
    print(f"{size_gb} GB: wrote {written:,} documents, {file_bytes / 1e6:,.0f} MB in {generated:.0f} s", flush=True)
    command = [sys.executable, "-m", "tfllm.cli", "prepare", "--run-dir", run_dir, f"data.path={corpus}", *OVERRIDES]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    log_path = os.path.join(work_dir, "prepare.log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    with open(log_path) as log:
        output = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"tfllm prepare failed on {size_gb} GB:\n{output}")
    summary = SUMMARY.findall(output)[-1]
    tokenizer = re.search(r"tokenizer with \d+ ids in ([\d.]+)s", output).group(1)
    progress_lines = len(SUMMARY.findall(output)) - 1
    shutil.rmtree(run_dir)
    os.remove(corpus)
    row = {
        "size_gb": size_gb, "file_mb": file_bytes / 1e6, "documents": int(summary[0].replace(",", "")),
        "read_mb": float(summary[1].replace(",", "")), "read_s": float(summary[2]),
        "documents_per_s": int(summary[3].replace(",", "")), "mb_per_s": float(summary[4].replace(",", "")),
        "tokenizer_s": float(tokenizer), "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
        "progress_lines": progress_lines,
    }
    print(row, flush=True)
    return row


def format_report(rows):
    floor = rows[0]["peak_rss_mib"]
    lines = [
        "| corpus | documents | peak RSS | over the smallest | read + clean + write | documents/s | MB/s "
        "| tokenizer | whole command | progress lines |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file_mb']:,.0f} MB | {r['documents']:,} | {r['peak_rss_mib']:,.0f} MiB "
            f"| {r['peak_rss_mib'] - floor:+,.0f} MiB | {r['read_s']:.1f} s | {r['documents_per_s']:,} "
            f"| {r['mb_per_s']:.2f} | {r['tokenizer_s']:.1f} s | {r['wall_s']:.0f} s | {r['progress_lines']} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", default="0.001,0.1,0.5,1.0", help="corpus sizes in GB (1e9 bytes)")
    parser.add_argument("--out", default=OUT_PATH, help="markdown table written here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfllm-prepare-bench-") as work_dir:
        for size in (float(s) for s in args.sizes_gb.split(",")):
            rows.append(measure(size, work_dir))
    report = format_report(rows)
    write_atomically(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
