"""The data.* cleaning keys: defaults, validation, and the `Cleaner` they make."""

import pytest

from tfllm.config import load_config
from tfllm.errors import UserError
from tfllm.trainers.prepare_data import make_cleaner


def test_defaults_redact_personal_data_only():
    d = load_config().data
    assert (d.redact_personal_data, d.near_duplicates, d.quality_filter, d.blocklist) == (True, False, False, None)
    config = make_cleaner(d).get_config()
    assert config["redact_personal_data"] is True
    assert config["blocklist"] is config["quality"] is config["near_duplicates"] is None
    assert config["max_removed_samples"] == 20


def test_keys_reach_the_cleaner():
    d = load_config(None, [
        "data.redact_personal_data=false", "data.quality_filter=true", "data.quality_min_words=7",
        "data.quality_max_top_3gram=0.5", "data.near_duplicates=true", "data.near_duplicate_threshold=0.9",
        "data.near_duplicate_ngram=3", "data.near_duplicate_num_perm=64", "data.removed_samples=0",
    ]).data
    config = make_cleaner(d).get_config()
    assert config["redact_personal_data"] is False and config["max_removed_samples"] == 0
    assert config["quality"]["min_words"] == 7 and config["quality"]["max_top_3gram"] == 0.5
    assert config["quality"]["max_top_2gram"] == d.quality_max_top_2gram == 0.2
    assert config["near_duplicates"] == {"threshold": 0.9, "ngram": 3, "num_perm": 64, "seed": 1}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.near_duplicate_threshold=0", r"data\.near_duplicate_threshold=0\.0 is invalid: use a Jaccard"),
        ("data.near_duplicate_threshold=1.2", r"data\.near_duplicate_threshold=1\.2 is invalid"),
        ("data.near_duplicate_ngram=0", r"data\.near_duplicate_ngram=0 is invalid"),
        ("data.near_duplicate_num_perm=1", r"data\.near_duplicate_num_perm=1 is invalid"),
        ("data.quality_max_duplicate_lines=1.5", r"data\.quality_max_duplicate_lines=1\.5 is invalid: use a fraction"),
        ("data.quality_min_words=-1", r"data\.quality_min_words=-1 is invalid: use 0 or more"),
        ("data.quality_max_mean_word_length=2", r"data\.quality_max_mean_word_length=2\.0 is invalid: use at least"),
        ("data.removed_samples=-1", r"data\.removed_samples=-1 is invalid"),
        ("data.blocklist_action=hide", r"data\.blocklist_action='hide' is invalid: use drop or mask"),
        ("data.blocklist=3", r"data\.blocklist must be str or null"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(None, [override])
