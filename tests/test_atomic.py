"""olft.atomic: a reader sees the old file or the new one, never half of one, and no leftovers."""

import json

import pytest

from olft.atomic import atomic_path, atomic_write, write_json


def test_atomic_write_replaces_text_and_bytes(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'  # key order kept
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write(path, "é")
    assert path.read_bytes() == "é".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"status": "complete"})
    with pytest.raises(ZeroDivisionError), atomic_path(path) as tmp:
        tmp.write_text('{"status": "runn')  # killed halfway
        raise ZeroDivisionError
    assert json.loads(path.read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_temporary_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "layers.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".layers.tmp")
        tmp.write_bytes(b"png")
    assert (tmp_path / "layers.png").read_bytes() == b"png"


def test_folders_first_finished_copy_wins(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("first")
    with atomic_path(target) as tmp:  # a second process converting the same model
        tmp.mkdir()
        (tmp / "config.json").write_text("second")
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
