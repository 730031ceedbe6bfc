import os
import pathlib
import stat

import pytest

from tfllm.files import replace_directory, staging_directory, write_atomically


def test_replaces_a_full_directory_and_leaves_nothing_behind(tmp_path):
    target, new = tmp_path / "out", tmp_path / "staging"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_directory(str(new), str(target))
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_moves_into_place_when_nothing_is_there(tmp_path):
    new = tmp_path / "staging"
    new.mkdir()
    (new / "a").write_text("a")
    replace_directory(str(new), str(tmp_path / "out"))
    assert (tmp_path / "out" / "a").read_text() == "a" and not new.exists()


def test_write_atomically_writes_str_as_utf8_and_bytes_as_they_are(tmp_path):
    write_atomically(str(tmp_path / "a.txt"), "naïve ☃\n")
    write_atomically(str(tmp_path / "b.bin"), b"\x00\xff")
    assert (tmp_path / "a.txt").read_bytes() == "naïve ☃\n".encode("utf-8")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_write_atomically_replaces_a_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old, and longer than the new text")
    (tmp_path / "other").write_text("x")
    before = sorted(os.listdir(tmp_path))
    write_atomically(str(path), "new")
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize(
    "content, mode",
    [(12345, None), ("text", "rw")],
    ids=["content that cannot be written", "failure after the write, before the rename"],
)
def test_a_failed_write_leaves_the_old_file_and_no_stray_file(tmp_path, content, mode):
    path = tmp_path / "best.json"
    path.write_text("old")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(TypeError):
        write_atomically(str(path), content, mode=mode)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_the_new_file_has_the_mode_open_would_give_it(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "reference", "w"):
            pass
        write_atomically(str(tmp_path / "written"), "x")
    finally:
        os.umask(previous)
    assert mode_of(tmp_path / "written") == mode_of(tmp_path / "reference") == 0o666 & ~umask


def test_an_explicit_mode_is_the_new_file_mode(tmp_path):
    write_atomically(str(tmp_path / "secret"), "x", mode=0o600)
    assert mode_of(tmp_path / "secret") == 0o600


@pytest.mark.parametrize("exists", [True, False], ids=["replaces a directory", "creates one"])
def test_staging_directory_replaces_the_target_whole_and_readable(tmp_path, exists):
    target = tmp_path / "tokenizer"
    if exists:
        target.mkdir()
        (target / "old.txt").write_text("old")
    with staging_directory(str(target)) as staging:
        assert os.path.dirname(staging) == str(tmp_path) and not os.listdir(staging)
        pathlib.Path(staging, "new.txt").write_text("new")
    assert os.listdir(target) == ["new.txt"] and (target / "new.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["tokenizer"]
    assert mode_of(target) == 0o755


def test_staging_directory_leaves_the_target_and_no_stray_entry_when_the_body_raises(tmp_path):
    target = tmp_path / "corpus"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="midway"):
        with staging_directory(str(target), prefix=".corpus.tmp-") as staging:
            assert os.path.basename(staging).startswith(".corpus.tmp-")
            pathlib.Path(staging, "half.txt").write_text("half")
            raise RuntimeError("midway")
    assert os.listdir(target) == ["old.txt"] and (target / "old.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["corpus"]


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_user_file_that_cannot_be_read_is_one_line_naming_its_flag(tmp_path):
    from tfllm.errors import UserError
    from tfllm.files import read_user_file

    (tmp_path / "ok.txt").write_text("é\n", encoding="utf-8")
    assert read_user_file(str(tmp_path / "ok.txt"), "--flag", "hint") == "é\n"
    assert read_user_file(str(tmp_path / "ok.txt"), "--flag", "hint", binary=True) == "é\n".encode()
    (tmp_path / "latin1.txt").write_bytes(b"\xe9\n")
    for path, says in ((tmp_path / "missing.txt", "cannot read --flag "), (tmp_path / "latin1.txt", "is not UTF-8"),
                       (tmp_path, "cannot read --flag ")):
        with pytest.raises(UserError) as error:
            read_user_file(str(path), "--flag", "pass another")
        message = str(error.value)
        assert says in message and str(path) in message and message.endswith("pass another")
        assert message.splitlines() == [message]
