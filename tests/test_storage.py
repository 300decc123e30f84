"""Small files (results, configs) on local paths and URIs (gbvnet.data.storage)."""

from __future__ import annotations

import pytest

from gbvnet.config import ConfigError, load_yaml
from gbvnet.data.storage import read_text, write_text


def test_small_files_round_trip_through_uris(tmp_path):
    """Result JSON and best configs may live on object storage (any pyarrow/fsspec URI), written atomically."""
    write_text("memory://gbvnet-test/runs/best.yaml", "train:\n  lr: 0.001\n")
    assert load_yaml("memory://gbvnet-test/runs/best.yaml") == {"train": {"lr": 0.001}}
    local = tmp_path / "new" / "folder" / "out.json"
    write_text(str(local), "{}")
    assert read_text(str(local)) == "{}" and [p.name for p in local.parent.iterdir()] == ["out.json"]
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_yaml(str(tmp_path / "missing.yaml"))
