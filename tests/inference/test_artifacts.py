"""An artifact folder appears complete or not at all."""

import pytest

from inference.artifacts import atomic_dir


def test_folder_is_renamed_into_place_when_the_block_succeeds(tmp_path):
    final = tmp_path / "models" / "m1"
    with atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"123")
        assert final.exists() is False
    assert (final / "weights.bin").read_bytes() == b"123"
    assert sorted(p.name for p in final.parent.iterdir()) == ["m1"]


def test_a_failed_write_leaves_neither_the_folder_nor_its_temporary(tmp_path):
    final = tmp_path / "m1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"1")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_refused(tmp_path):
    (tmp_path / "m1").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_dir(tmp_path / "m1"):
            pass
