"""The command line end to end, on a slice of MovieLens-100k and on bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shelfrank.datasets.records import FeatureTable, Interactions
from shelfrank.datasets.writers import write_features, write_interactions
from shelfrank.server.cli import build_parser, main
from shelfrank.server.stores import open_store
from tests.conftest import run_cli

if TYPE_CHECKING:
    from shelfrank.server.app import ServerOptions


@pytest.fixture(scope="module")
def ml_slice(ml100k_csvs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-100k converted to the import format, ua.base cut to its first 200 users."""
    out = tmp_path_factory.mktemp("ml")
    for item in ml100k_csvs.iterdir():
        (out / item.name).write_bytes(item.read_bytes())
    for name in ("ua.base.csv", "ua.test.csv"):
        lines = (out / name).read_text().splitlines()
        keep = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[0]) <= 200]
        (out / f"slice-{name}").write_text("\n".join(keep) + "\n")
    return out


def test_import_train_recommend_evaluate(ml_slice: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    done = run_cli(
        "train",
        "--interactions",
        str(ml_slice / "slice-ua.base.csv"),
        "--items",
        str(ml_slice / "items.csv"),
        "--users",
        str(ml_slice / "users.csv"),
        "--out",
        str(model),
        "--epochs",
        "5",
        "--seed",
        "1",
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert f"written to {model}" in done.stdout
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["format"] == "shelfrank-model"
    assert manifest["params"]["epochs"] == 5

    # users 1..3 are known; "new1" is folded in from a history; candidates restrict ranking
    (tmp_path / "users.txt").write_text("1\n2\n\n3\nnew1\n")
    (tmp_path / "history.csv").write_text(
        "user_id,item_id,event_type\nnew1,50,purchase\nnew1,172,purchase\nnew1,181,view\n"
    )
    (tmp_path / "candidates.txt").write_text("\n".join(str(i) for i in range(1, 301)) + "\n")
    out = tmp_path / "recs.jsonl"
    done = run_cli(
        "recommend",
        "--model",
        str(model),
        "--users",
        str(tmp_path / "users.txt"),
        "--k",
        "7",
        "--exclude-seen",
        "--candidates",
        str(tmp_path / "candidates.txt"),
        "--history",
        str(tmp_path / "history.csv"),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["user_id"] for line in lines] == ["1", "2", "3", "new1"]
    for line in lines:
        ids = [item["item_id"] for item in line["items"]]
        assert len(ids) == 7
        assert all(1 <= int(i) <= 300 for i in ids)
        scores = [item["score"] for item in line["items"]]
        assert scores == sorted(scores, reverse=True)
    assert not {"50", "172", "181"} & {item["item_id"] for item in lines[3]["items"]}

    done = run_cli(
        "evaluate",
        "--protocol",
        "given",
        "--interactions",
        str(ml_slice / "slice-ua.base.csv"),
        "--test",
        str(ml_slice / "slice-ua.test.csv"),
        "--items",
        str(ml_slice / "items.csv"),
        "--relevant",
        "purchase",
        "--epochs",
        "5",
        "--seed",
        "1",
        "--json",
        "-",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["models"]) == {"hybrid", "lightfm-cf", "popularity", "user-knn"}
    assert report["models"]["hybrid"]["precision"] > report["models"]["popularity"]["precision"]


def test_recommend_all_users(tmp_path: Path, toy_csvs: Path) -> None:
    train_toy(toy_csvs, tmp_path / "m", epochs=2)
    assert (
        main(
            [
                "recommend",
                "--model",
                str(tmp_path / "m"),
                "--users",
                "all",
                "--k",
                "2",
                "--out",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 0
    )
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3


def train_toy(data: Path, model: Path, epochs: int) -> None:
    args = ["train", "--interactions", str(data / "events.csv"), "--out", str(model)]
    assert main([*args, "--epochs", str(epochs), "--quiet"]) == 0


@pytest.fixture
def toy_csvs(tmp_path: Path) -> Path:
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,event_type\na,x,purchase\na,y,view\nb,y,purchase\nc,z,view\nb,x,,\nq,,view\n"
    )
    return tmp_path


def test_bad_rows_are_reported_and_strict_makes_them_fatal(toy_csvs: Path, tmp_path: Path) -> None:
    events = str(toy_csvs / "events.csv")
    done = run_cli("train", "--interactions", events, "--out", str(tmp_path / "m"), "--epochs", "1")
    assert done.returncode == 0
    assert "6 rows, 4 accepted, 2 rejected" in done.stderr
    assert f"{events}:6: expected 3 columns, got 4" in done.stderr
    assert f"{events}:7: missing item_id" in done.stderr
    done = run_cli("train", "--interactions", events, "--out", str(tmp_path / "m2"), "--strict")
    assert done.returncode == 1
    assert done.stderr.strip() == f"shelfrank: error: {events}:6: expected 3 columns, got 4"
    assert not (tmp_path / "m2").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["train", "--interactions", "missing.csv", "--out", "m"],
            1,
            "missing.csv: file not found",
        ),
        (["train", "--out", "m"], 2, "the following arguments are required: --interactions"),
        (
            ["train", "--interactions", "x.csv", "--out", "m", "--epochs", "0"],
            2,
            "--epochs: must be positive",
        ),
        (
            ["train", "--interactions", "x.csv", "--out", "m", "--event-weight", "like=2"],
            2,
            "unknown value 'like'",
        ),
        (
            ["recommend", "--model", "nowhere", "--users", "all", "--k", "3", "--out", "o"],
            1,
            "nowhere: not a directory",
        ),
        (
            ["recommend", "--model", "m", "--users", "all", "--k", "-1", "--out", "o"],
            2,
            "--k: must be positive",
        ),
        (["evaluate", "--protocol", "given", "--interactions", "x.csv"], 1, "--test is required"),
        (
            ["evaluate", "--protocol", "bogus", "--interactions", "x.csv"],
            2,
            "invalid choice: 'bogus'",
        ),
        (
            ["evaluate", "--protocol", "random", "--interactions", "x.csv", "--save-to", " "],
            1,
            "--save-to: give a state directory or a postgresql:// URL",
        ),
        (  # the store is opened before the run: no waiting for the report to fail
            [
                "evaluate",
                "--protocol",
                "random",
                "--interactions",
                "x.csv",
                "--save-to",
                "postgresql://nobody@127.0.0.1:1/shop",
            ],
            1,
            "event store (PostgreSQL at 127.0.0.1:1/shop): open:",
        ),
        (["frobnicate"], 2, "invalid choice"),
        (["serve", "--state", "s", "--first-model-users", "0"], 2, "must be positive"),
    ],
)
def test_bad_arguments_give_one_line_errors(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "x.csv").write_text("user_id,item_id\nu,i\n")
    done = subprocess.run(
        [sys.executable, "-m", "shelfrank.server", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if code == 1:
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture
def toy_shop_csvs(
    toy_shop: tuple[Interactions, FeatureTable, FeatureTable], tmp_path: Path
) -> list[str]:
    """``evaluate`` arguments for the toy shop: a random split, two models, users grouped
    (so two charts), small and fast."""
    interactions, _, users = toy_shop
    write_interactions(tmp_path / "events.csv", interactions)
    write_features(tmp_path / "users.csv", users)
    return [
        "evaluate", "--protocol", "random", "--interactions", str(tmp_path / "events.csv"),
        "--users", str(tmp_path / "users.csv"), "--group-by", "segment",
        "--models", "hybrid,popularity", "--epochs", "2", "--components", "4",
        "--seed", "1", "--threads", "1", "--quiet",
    ]  # fmt: skip


SAVED = re.compile(r"^evaluation (\d{8}T\d{6}Z-random) saved to (.+)$", re.MULTILINE)


def test_evaluate_saves_its_report_and_charts_to_a_state_directory(
    toy_shop_csvs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --plot the charts are drawn for the store alone (no file left behind)."""
    state = tmp_path / "state"
    before = time.gmtime(time.time() - 1)
    code = main([*toy_shop_csvs, "--json", str(tmp_path / "r.json"), "--save-to", str(state)])
    assert code == 0
    out = capsys.readouterr().out
    found = SAVED.search(out)
    assert found is not None, out
    name = found.group(1)
    assert found.group(2) == str(state)
    assert (
        time.strftime("%Y%m%dT%H%M%SZ", before)
        <= name[:16]
        <= time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    )
    assert "P@10 / NDCG@10 by user segment" in out  # the table is printed as before
    store = open_store(state)
    try:
        (saved,) = store.evaluations()
        assert (saved.name, saved.files) == (name, ("groups.png", "metrics.png", "report.json"))
        # report.json: what --json writes, byte for byte
        report = store.evaluation_file(name, "report.json")
        assert report == (tmp_path / "r.json").read_bytes()
        assert json.loads(report)["protocol"] == "random"
        for chart in ("groups.png", "metrics.png"):
            assert store.evaluation_file(name, chart).startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.csv",
        "r.json",
        "state",
        "users.csv",
    ]


def test_evaluate_saves_the_charts_it_drew_to_postgresql(
    toy_shop_csvs: list[str], tmp_path: Path, postgres_url: str
) -> None:
    """With --plot the stored charts are the files it wrote; with --json - stdout stays
    the JSON alone (the name goes to stderr)."""
    done = run_cli(
        *toy_shop_csvs, "--json", "-", "--plot", str(tmp_path / "chart.png"),
        "--save-to", postgres_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    found = SAVED.search(done.stderr)
    assert found is not None, done.stderr
    name = found.group(1)
    store = open_store(postgres_url)
    try:
        (saved,) = store.evaluations()
        assert (saved.name, saved.files) == (name, ("groups.png", "metrics.png", "report.json"))
        assert json.loads(store.evaluation_file(name, "report.json")) == printed
        assert store.evaluation_file(name, "metrics.png") == (tmp_path / "chart.png").read_bytes()
        assert (
            store.evaluation_file(name, "groups.png")
            == (tmp_path / "chart-groups.png").read_bytes()
        )
    finally:
        store.close()


def test_bad_header_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("customer,item_id\nu,i\n")
    done = run_cli("train", "--interactions", str(tmp_path / "e.csv"), "--out", str(tmp_path / "m"))
    assert done.returncode == 1
    assert f"{tmp_path / 'e.csv'}:1: unknown column 'customer'" in done.stderr


def test_corrupted_model_is_refused_by_recommend(tmp_path: Path, toy_csvs: Path) -> None:
    train_toy(toy_csvs, tmp_path / "m", epochs=1)
    (tmp_path / "m" / "serving.npz").write_bytes(b"garbage")
    done = run_cli(
        "recommend",
        "--model",
        str(tmp_path / "m"),
        "--users",
        "all",
        "--k",
        "2",
        "--out",
        str(tmp_path / "r"),
    )
    assert done.returncode == 1
    assert "serving.npz: size is 7 bytes" in done.stderr


def test_synth_command_writes_readable_files(tmp_path: Path) -> None:
    assert (
        main(["synth", "--items", "50", "--users", "20", "--events", "300", "--out", str(tmp_path)])
        == 0
    )
    from shelfrank.datasets import read_interactions

    table, report = read_interactions(tmp_path / "interactions.csv")
    assert len(table) == 300
    assert report.rows_rejected == 0


def test_serve_runs_the_compiled_search_unless_told_not_to() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "--state", "s"]).compiled_search is True
    assert (
        parser.parse_args(["serve", "--state", "s", "--no-compiled-search"]).compiled_search
        is False
    )


@pytest.fixture
def served_options(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServerOptions]]:
    """``serve`` stops short of starting the server and keeps the options it was given;
    the log handlers it installs are taken off again."""
    from shelfrank.server import app

    started: list[ServerOptions] = []
    monkeypatch.setattr(app, "run", started.append)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield started
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_serve_first_model_flags_reach_the_server_options(
    tmp_path: Path, served_options: list[ServerOptions]
) -> None:
    from shelfrank.server.app import ServerOptions

    assert main(["serve", "--state", str(tmp_path)]) == 0
    flags = ["--demo", "--first-model-events", "20", "--first-model-users", "3"]
    assert main(["serve", "--state", str(tmp_path), *flags]) == 0
    default, chosen = served_options
    expected = ServerOptions(state_dir=tmp_path)
    assert (default.demo, default.first_model_events, default.first_model_users) == (
        expected.demo,
        expected.first_model_events,
        expected.first_model_users,
    )
    assert (chosen.demo, chosen.first_model_events, chosen.first_model_users) == (True, 20, 3)
