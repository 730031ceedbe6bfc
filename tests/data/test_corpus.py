import json
import os

import pytest

from tfllm.data.blocklist import Blocklist
from tfllm.data.cleaning import Cleaner
from tfllm.data.corpus import iter_texts, prepare_corpus
from tfllm.data.near_duplicates import NearDuplicateFilter
from tfllm.data.quality import QualityFilter
from tfllm.errors import UserError


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    return str(path)


def document(i):
    return f"document number {i}:" + " word" * (i % 5)


def prepare(path, out_dir, **kwargs):
    kwargs.setdefault("cleaner", Cleaner(min_chars=0))
    return prepare_corpus(str(path), str(out_dir), **kwargs)


def test_split_is_by_document_and_disjoint_even_with_duplicates(tmp_path):
    texts = [document(i) for i in range(150)]
    path = write_jsonl(tmp_path / "a.jsonl", texts + texts[::3])
    stats = prepare(path, tmp_path / "out", val_fraction=0.25, cleaner=Cleaner(deduplicate=False, min_chars=0))
    train, val = list(iter_texts(stats.out_dir, "train")), list(iter_texts(stats.out_dir, "val"))
    assert not set(train) & set(val)
    assert len(train) + len(val) == 200
    assert 20 <= len(set(val)) <= 60
    assert train == [t for t in texts + texts[::3] if t in set(train)]  # input order kept
    assert stats.documents == {"train": len(train), "val": len(val)}
    assert stats.chars == {"train": sum(map(len, train)), "val": sum(map(len, val))}


def test_split_depends_only_on_the_seed(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [document(i) for i in range(100)])
    vals = [
        list(iter_texts(prepare(path, tmp_path / f"out{run}", val_fraction=0.2, seed=seed).out_dir, "val"))
        for run, seed in enumerate([7, 7, 8])
    ]
    assert vals[0] == vals[1]
    assert vals[0] != vals[2]


def test_val_path_is_the_validation_split(tmp_path):
    train_texts = [document(i) for i in range(10)]
    path = write_jsonl(tmp_path / "train.jsonl", train_texts)
    val_path = write_jsonl(tmp_path / "val.jsonl", ["held out one  \n", document(3), "held out two"])
    stats = prepare(path, tmp_path / "out", val_path=val_path, val_fraction=0.9)
    assert list(iter_texts(stats.out_dir, "train")) == train_texts
    assert list(iter_texts(stats.out_dir, "val")) == ["held out one", "held out two"]
    assert stats.val_source == val_path and stats.val_fraction is None
    assert stats.cleaning["dropped_duplicate"] == 1


def test_shards_and_stats_file(tmp_path):
    texts = [document(i) for i in range(40)]
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    stats = prepare(path, tmp_path / "out", val_fraction=0.25, docs_per_shard=7)
    out = tmp_path / "out"
    n_train = stats.documents["train"]
    assert [os.path.basename(f) for f in stats.files["train"]] == [
        f"train-{i:05d}.tfrecord" for i in range(-(-n_train // 7))
    ]
    shards = [os.path.basename(f) for f in stats.files["train"] + stats.files["val"]]
    assert sorted(os.listdir(out)) == sorted(shards + ["stats.json"])
    saved = json.loads((out / "stats.json").read_text())
    assert saved["documents"] == stats.documents
    assert saved["source"] == path
    assert saved["cleaning"]["kept"] == 40
    assert saved["bytes"]["train"] + saved["bytes"]["val"] == sum(len(t.encode()) for t in texts)


def test_empty_corpus_after_cleaning_names_counts_and_leaves_nothing(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ["tiny", "", "tiny"])
    counts = r"\(documents_in=3, kept=0, dropped_empty=1, dropped_too_short=2, dropped_duplicate=0\)"
    with pytest.raises(UserError, match=f"Corpus '{path}' is empty after cleaning {counts}"):
        prepare(path, tmp_path / "out", cleaner=Cleaner(min_chars=10))
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl"]


def test_empty_validation_split_suggests_val_fraction(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [document(i) for i in range(3)])
    with pytest.raises(UserError, match="none of its 3 documents .* Raise data.val_fraction or set data.val_path"):
        prepare(path, tmp_path / "out", val_fraction=1e-9)
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl"]


def test_error_midway_leaves_previous_corpus_untouched(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [document(i) for i in range(30)])
    prepare(good, tmp_path / "out", val_fraction=0.3)
    before = sorted(os.listdir(tmp_path / "out"))
    (tmp_path / "bad").mkdir()
    write_jsonl(tmp_path / "bad" / "a.jsonl", [document(i) for i in range(30)])
    (tmp_path / "bad" / "b.jsonl").write_text('{"text": broken\n')
    with pytest.raises(UserError, match="b.jsonl:1 is not valid JSON"):
        prepare(tmp_path / "bad", tmp_path / "out", val_fraction=0.3)
    assert sorted(os.listdir(tmp_path / "out")) == before
    assert sorted(os.listdir(tmp_path)) == ["bad", "good.jsonl", "out"]


def test_prepared_corpus_is_replaced_but_other_directories_are_not(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [document(i) for i in range(30)])
    prepare(path, tmp_path / "out", val_fraction=0.3)
    stats = prepare(path, tmp_path / "out", val_fraction=0.5)
    assert stats.val_fraction == 0.5
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not a prepared corpus"):
        prepare(path, tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


@pytest.mark.parametrize("val_fraction", [0.0, 1.0])
def test_val_fraction_out_of_range(tmp_path, val_fraction):
    expected = f"data.val_fraction must be between 0 and 1 \\(exclusive\\). Received: {val_fraction}"
    with pytest.raises(UserError, match=expected):
        prepare(tmp_path, tmp_path / "out", val_fraction=val_fraction)


def test_cleaning_counts_and_removed_samples_land_in_the_corpus(tmp_path):
    (tmp_path / "blocklist.txt").write_text("forbidden\n")
    texts = [document(i) + " and more words to read." for i in range(20)] + [
        "reach me at ada@example.org for document number 3 and more words to read.",
        "a forbidden document number 99 and more words to read.",
        "short one.",
        "document number 7: word word and more words to read!",
    ]
    path = write_jsonl(tmp_path / "a.jsonl", texts)
    cleaner = Cleaner(
        min_chars=0,
        blocklist=Blocklist(str(tmp_path / "blocklist.txt")),
        quality=QualityFilter(min_words=3, max_top_2gram=1.0, max_top_3gram=1.0, max_top_4gram=1.0),
        near_duplicates=NearDuplicateFilter(threshold=0.8, ngram=3),
    )
    stats = prepare(path, tmp_path / "out", val_fraction=0.3, cleaner=cleaner)
    saved = json.loads((tmp_path / "out" / "stats.json").read_text())["cleaning"]
    assert saved["personal_data"]["email"] == 1
    assert saved["blocklist"] == {"dropped": 1, "masked": 0}
    assert saved["quality"]["min_words"] == 1
    assert saved["near_duplicate"] == 1
    assert stats.cleaning == saved
    removed = tmp_path / "out" / "removed"
    reasons = ("blocklist", "near_duplicate", "personal_data", "quality")
    assert sorted(os.listdir(removed)) == [f"{reason}.jsonl" for reason in reasons]
    samples = {
        reason: [json.loads(line) for line in (removed / f"{reason}.jsonl").read_text().splitlines()]
        for reason in reasons
    }
    assert samples["near_duplicate"][0]["document"] == 23 and samples["near_duplicate"][0]["similar_to"] == 7
    assert samples["personal_data"][0]["text"].startswith("reach me at <EMAIL>")
    assert samples["blocklist"][0]["phrase"] == "forbidden"
    assert samples["quality"] == [{"document": 22, "rule": "min_words", "chars": 10, "text": "short one."}]
    assert stats.summary().endswith(
        "(dropped 0 empty, 0 too short, 0 duplicates, 1 near duplicates, 1 low quality (1 min_words), "
        "1 blocklisted); redacted 1 personal data (1 email)"
    )
