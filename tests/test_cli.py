"""gwlora.cli: atomic outputs appear whole or not at all, and never replace anything outside their folder."""

import pytest

from gwlora.cli import StageError, atomic_dir, atomic_file, read_json


def test_atomic_dir_replaces_its_target_whole(tmp_path):
    target = tmp_path / "out"
    (target / "old").mkdir(parents=True)
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("x")
    assert [p.name for p in target.iterdir()] == ["new"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


@pytest.mark.parametrize("writer", [atomic_dir, atomic_file])
def test_atomic_writers_refuse_a_target_that_names_a_parent(tmp_path, writer):
    cache = tmp_path / "resources" / "audio"
    precious = tmp_path / "resources" / "gwosc" / "strain.hdf5"
    precious.parent.mkdir(parents=True)
    precious.write_bytes(b"hours of downloads")
    cache.mkdir()
    with pytest.raises(StageError, match="refusing to write"), writer(cache / ".."):
        pass
    assert precious.read_bytes() == b"hours of downloads"


def test_atomic_writers_refuse_a_symlinked_target(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    (tmp_path / "out").symlink_to(elsewhere)
    with pytest.raises(StageError, match="a link"), atomic_dir(tmp_path / "out"):
        pass
    assert (elsewhere / "keep").read_text() == "x"


def test_temporaries_left_by_a_killed_writer_are_cleared_at_the_next_run(tmp_path):
    stale_dir, stale_file = tmp_path / ".out.tmp-abc123", tmp_path / ".out.json.tmp-def456"
    (stale_dir / "half").mkdir(parents=True)
    stale_file.write_text("half")
    other = tmp_path / ".other.tmp-zzz"
    other.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "whole").write_text("x")
    with atomic_file(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-zzz", "out", "out.json"]


@pytest.mark.parametrize("content", [b'{"a": 1\n"b": 2}', b"", b'{"a": "\xff"}'], ids=["bad-delimiter", "empty", "not-utf8"])
def test_a_corrupt_json_file_is_named_with_how_to_rebuild_it(tmp_path, content):
    """json's own message ("Expecting ',' delimiter: line 2 column 1") names neither the file nor a fix."""
    path = tmp_path / "summary.json"
    path.write_bytes(content)
    with pytest.raises(StageError, match=rf"^{path} is corrupt, not valid JSON \(.+\): retrain it$") as info:
        read_json(path, rebuild="retrain it")
    assert isinstance(info.value, ValueError)  # callers that treat a corrupt file as absent (except ValueError) still do
    assert "\n" not in str(info.value)

