"""The generated protobuf code is exactly what scripts/gen_proto.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED_IN = REPO / "proto" / "_generated"


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    checked_in = {p.name: p.read_bytes() for p in CHECKED_IN.iterdir() if p.is_file()}
    stale = sorted(
        name for name in fresh.keys() | checked_in.keys() if fresh.get(name) != checked_in.get(name)
    )
    assert stale == [], f"regenerate with `python scripts/gen_proto.py`: {stale} differ"


def test_generated_descriptor_keeps_the_public_names() -> None:
    from shelfrank.proto._generated import recommender_pb2

    service = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]
    assert service.full_name == "shelfrank.v1.Recommender"
    assert {m.name for m in service.methods} == {
        "Recommend",
        "SimilarItems",
        "Rank",
        "Track",
        "UpsertItems",
        "UpsertUsers",
        "DeleteUser",
        "GetModelInfo",
        "SetAvailability",
        "ReportShown",
        "GetReport",
    }
    assert recommender_pb2.DESCRIPTOR.name == "shelfrank/v1/recommender.proto"
    assert [v.name for v in recommender_pb2.EventType.DESCRIPTOR.values][1:] == [
        "VIEW",
        "ADD_TO_CART",
        "PURCHASE",
        "SEARCH",
        "DISMISS",
    ]
