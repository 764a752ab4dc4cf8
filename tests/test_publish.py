import os

import pytest

from trainer.publish import next_version_name, publish_adapter, remove_unpublished, tree_sha256


@pytest.fixture
def adapter(tmp_path):
    src = tmp_path / "trained"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    return src


def test_publish_copies_then_registers(store, adapter, tmp_path):
    data = tmp_path / "data"
    version = publish_adapter(store, adapter, data, "v1", parent="base", metrics={"kl": 1.0})
    assert (data / "adapters" / "v1").is_dir()
    assert not (data / "adapters" / "v1.tmp").exists()
    assert ("candidate", str(data / "adapters" / "v1"), "base") == (
        version.status,
        version.path,
        store.get_version_by_id(version.parent_id).name,
    )
    assert tree_sha256(adapter) == version.sha256
    assert "v2" == next_version_name(store)


def test_a_crash_before_the_insert_leaves_nothing_visible(store, adapter, tmp_path, monkeypatch):
    data = tmp_path / "data"

    def crash(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr(store, "add_version", crash)
    with pytest.raises(OSError):
        publish_adapter(store, adapter, data, "v1", parent="base")
    monkeypatch.undo()
    assert ["base"] == [v.name for v in store.versions()]  # no row: serving never sees it
    assert [data / "adapters" / "v1"] == remove_unpublished(store, data)
    assert [] == os.listdir(data / "adapters")
    publish_adapter(store, adapter, data, "v1", parent="base")  # the name is free again
    assert ["base", "v1"] == [v.name for v in store.versions()]


def test_names_are_never_reused(store, adapter, tmp_path):
    publish_adapter(store, adapter, tmp_path, "v1", parent="base")
    with pytest.raises(FileExistsError):
        publish_adapter(store, adapter, tmp_path, "v1", parent="base")
