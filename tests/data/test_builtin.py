import os
import sysconfig

import pytest
from pydoc_data.topics import topics

from tfllm.data.builtin import iter_builtin_documents, stdlib_source_files
from tfllm.errors import UserError


def test_python_docs_is_one_document_per_topic():
    documents = list(iter_builtin_documents("builtin:python-docs"))
    assert 60 <= len(documents) == len(topics)
    assert [d.source for d in documents] == [f"builtin:python-docs:{t}" for t in sorted(topics)]
    assert all(d.text.strip() for d in documents)
    assert documents[0].text == topics[sorted(topics)[0]]
    assert 300_000 < sum(len(d.text) for d in documents) < 2_000_000


def test_python_stdlib_files_are_sorted_sources_without_tests():
    files = stdlib_source_files()
    assert files == sorted(files)
    assert "os.py" in files and os.path.join("json", "decoder.py") in files
    skipped = {"site-packages", "test", "tests", "idle_test"}
    assert not [f for f in files if skipped & set(f.split(os.sep))]
    assert all(f.endswith(".py") for f in files)
    assert len(files) > 300


def test_python_stdlib_documents_are_the_files_in_order():
    files = stdlib_source_files()
    documents = iter_builtin_documents("builtin:python-stdlib")
    for expected, document in zip(files[:5], documents):
        assert document.source == f"builtin:python-stdlib:{expected}"
        with open(os.path.join(sysconfig.get_paths()["stdlib"], expected), encoding="utf-8") as f:
            assert document.text == f.read()


def test_unknown_builtin_lists_valid_names():
    with pytest.raises(UserError, match="builtin:python-docs, builtin:python-stdlib"):
        iter_builtin_documents("builtin:wikipedia")
