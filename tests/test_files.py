from tfllm.files import replace_directory


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
