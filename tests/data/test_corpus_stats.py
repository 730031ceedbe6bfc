import json
import os

import pytest

from tfllm.data.corpus_stats import CorpusStats
from tfllm.errors import UserError


def make_stats(out_dir):
    return CorpusStats(
        out_dir=str(out_dir),
        source="data/*.txt",
        val_source=None,
        val_fraction=0.1,
        seed=3,
        documents={"train": 9, "val": 1},
        chars={"train": 90, "val": 10},
        bytes={"train": 91, "val": 10},
        files={"train": [str(out_dir / "train-00000.tfrecord")], "val": [str(out_dir / "val-00000.tfrecord")]},
        cleaning={
            "documents_in": 12,
            "kept": 10,
            "dropped_empty": 0,
            "dropped_too_short": 1,
            "dropped_duplicate": 1,
        },
        cleaner={"min_chars": 0},
    )


def test_files_are_saved_relative_and_loaded_absolute(tmp_path):
    (tmp_path / "before").mkdir()
    make_stats(tmp_path / "before").save(str(tmp_path / "before"))
    assert json.loads((tmp_path / "before" / "stats.json").read_text())["files"] == {
        "train": ["train-00000.tfrecord"],
        "val": ["val-00000.tfrecord"],
    }
    os.rename(tmp_path / "before", tmp_path / "after")
    loaded = CorpusStats.load(str(tmp_path / "after"))
    assert loaded == make_stats(tmp_path / "after")


def test_summary_and_split_files(tmp_path):
    stats = make_stats(tmp_path)
    assert stats.train_files == [str(tmp_path / "train-00000.tfrecord")]
    assert stats.val_files == [str(tmp_path / "val-00000.tfrecord")]
    assert stats.summary() == (
        "Corpus data/*.txt: train 9 documents / 90 chars in 1 shards, val 1 documents / 10 chars in 1 shards; "
        "cleaning kept 10 of 12 documents (dropped 0 empty, 1 too short, 1 duplicates)"
    )


def test_missing_stats_names_the_directory(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path}.* is not a prepared corpus"):
        CorpusStats.load(str(tmp_path))


def test_stats_written_before_the_new_cleaning_counts_still_load(tmp_path):
    # A corpus prepared before personal data, blocklist, quality and near-duplicate counts existed.
    make_stats(tmp_path).save(str(tmp_path))
    content = json.loads((tmp_path / "stats.json").read_text())
    assert "near_duplicate" not in content["cleaning"] and "redact_personal_data" not in content["cleaner"]
    loaded = CorpusStats.load(str(tmp_path))
    assert loaded.summary().endswith("(dropped 0 empty, 1 too short, 1 duplicates)")


def test_summary_names_the_new_drops_and_redactions(tmp_path):
    stats = make_stats(tmp_path)
    cleaning = {
        **stats.cleaning,
        "near_duplicate": 2,
        "quality": {"min_words": 3, "symbol_ratio": 0},
        "blocklist": {"dropped": 1, "masked": 4},
        "personal_data": {"email": 2, "phone": 0, "secret": 1},
    }
    summary = CorpusStats(**{**stats.__dict__, "cleaning": cleaning}).summary()
    assert summary.endswith(
        "(dropped 0 empty, 1 too short, 1 duplicates, 2 near duplicates, 3 low quality (3 min_words), "
        "1 blocklisted); redacted 3 personal data (2 email, 1 secret); masked 4 blocklisted spans"
    )
