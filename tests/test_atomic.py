"""Atomic writes leave either the old state or the new one, never a half."""

import os

import pytest

from aradals_tf import atomic


def test_interrupted_directory_leaves_nothing(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_directory(target) as partial:
            open(os.path.join(partial, "half"), "w").write("x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_only_on_success(tmp_path):
    target = tmp_path / "run"
    with atomic.atomic_directory(target) as partial:
        open(os.path.join(partial, "v"), "w").write("1")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic.atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(target, overwrite=True) as partial:
            open(os.path.join(partial, "v"), "w").write("2")
            raise RuntimeError("killed")
    assert open(target / "v").read() == "1"
    with atomic.atomic_directory(target, overwrite=True) as partial:
        open(os.path.join(partial, "v"), "w").write("2")
    assert open(target / "v").read() == "2"
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_atomic_file_and_json(tmp_path):
    path = tmp_path / "m.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        with atomic.atomic_file(path) as stream:
            stream.write("{broken")
            raise ValueError("interrupted")
    assert atomic.read_json(path) == {"a": 1}
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        atomic.read_json(path)
