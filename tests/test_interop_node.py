"""A Node.js client that knows only proto/ does everything a Python client can."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.server.config import TrainConfig
from shelfrank.server.hybrid import HybridModel
from tests.conftest import serve_process, stop_process

NODE_DIR = Path(__file__).resolve().parent.parent / "interop" / "node"
Shop = tuple[Interactions, FeatureTable, FeatureTable]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_client_uses_every_method(toy_shop: Shop, tmp_path: Path) -> None:
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("interop/node dependencies missing: run `make interop` (npm ci)")
    interactions, items, users = toy_shop
    config = TrainConfig(components=8, epochs=10, seed=2, num_threads=1)
    HybridModel.train(interactions, config, items=items, users=users).save(tmp_path / "model")
    # The server runs as its own process: what the Node client talks to is `shelfrank serve`.
    server, address = serve_process(
        "--state", str(tmp_path / "state"), "--model", str(tmp_path / "model")
    )
    try:
        scenario = {
            "history": ["book1", "book2", "book4"],
            "similar_to": "book3",
            "rank": ["shoe1", "ghost", "book5"],
        }
        node = ["node", "client.js", address, json.dumps(scenario)]
        done = subprocess.run(
            node, cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        stop_process(server)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["info"]["response"]["model_version"]
    assert out["upsert"]["response"]["upserted"] == 1
    assert (out["track"]["response"]["accepted"], out["replay"]["response"]["duplicates"]) == (3, 3)
    recommended = out["recommend"]["response"]
    assert recommended["strategy"] == "FOLD_IN"
    assert all(
        i["item_id"].startswith("book") or i["item_id"] == "node-item" for i in recommended["items"]
    )
    assert [i["item_id"] for i in out["filtered"]["response"]["items"]] == ["node-item"]
    for item in out["explained"]["response"]["items"]:
        explained = item["explanation"]
        total = sum(c["value"] for c in explained["contributions"]) + explained["rest"]
        assert abs(total - item["score"]) < 1e-4
    assert out["unavailable"]["response"]["changed"] == 1
    assert out["unavailable"]["response"]["unknown_item_ids"] == ["nope"]
    assert out["after_unavailable"]["response"]["items"] == []
    assert len(out["similar"]["response"]["items"]) == 3
    assert out["similar_unknown"]["error"]["code"] == 5  # NOT_FOUND
    assert [i["item_id"] for i in out["rank"]["response"]["items"]][-1] == "ghost"
    assert out["bad_k"]["error"]["code"] == 3  # INVALID_ARGUMENT
    assert "k" in out["bad_k"]["error"]["details"]
    assert out["upsert_user"]["response"]["upserted"] == 1
    assert out["delete"]["response"]["existed"] is True
    assert out["after_delete"]["response"]["strategy"] == "POPULARITY"
