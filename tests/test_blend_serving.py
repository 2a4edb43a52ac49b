"""One blend, three ways in: the gRPC server, the offline CLI path and the temporal
evaluation rank with the same blended model and agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shelfrank.client import Client
from shelfrank.core.model_format import load_serving_model
from shelfrank.datasets import write_features, write_interactions
from shelfrank.datasets.synth import SynthConfig, SynthData, generate
from shelfrank.server.config import TrainConfig
from shelfrank.server.offline import recommend_users
from tests.conftest import serve_process, stop_process

CLI = [sys.executable, "-m", "shelfrank.server"]
CONFIG = TrainConfig(epochs=5, components=16, seed=2, num_threads=1, min_validation_users=20)


@pytest.fixture(scope="module")
def shop() -> SynthData:
    return generate(SynthConfig.shop(items=300, users=600, events=30_000, seed=11))


@pytest.fixture(scope="module")
def model_dir(shop: SynthData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shelfrank.server.hybrid import HybridModel

    out = tmp_path_factory.mktemp("blend") / "model"
    HybridModel.train(shop.interactions, CONFIG, items=shop.items, users=shop.users).save(out)
    return out


def test_server_and_offline_rank_the_same_blend(
    model_dir: Path, shop: SynthData, tmp_path: Path
) -> None:
    serving, _ = load_serving_model(model_dir)
    assert serving.signals is not None
    assert serving.signals.blend.get("trained", "repeat") != serving.signals.blend.get(
        "trained", "new"
    ), "the two modes were fitted apart"
    users = list(serving.user_ids.ids)[:15]
    newcomer = "a-new-shopper"
    tokens = ("segment=s01", "age_band=25-34")
    process, address = serve_process("--state", str(tmp_path / "state"), "--model", str(model_dir))
    try:
        with Client(address) as client:
            for user in users:
                (offline,) = recommend_users(serving, [user], 10, mode="repeat")
                served = client.recommend(user, 10, exclude_seen=False)
                assert [i.item_id for i in served.items] == [i for i, _ in offline.items]
                for got, (_, want) in zip(served.items, offline.items, strict=True):
                    assert got.score == pytest.approx(want, rel=1e-5, abs=1e-6)
            (offline,) = recommend_users(
                serving, [newcomer], 10, user_tokens={newcomer: tokens}, mode="new"
            )
            served = client.recommend(newcomer, 10, user_features=tokens)
            assert [i.item_id for i in served.items] == [i for i, _ in offline.items]
            # Rank orders a given list by the same blend (repeat mode: nothing excluded).
            user = users[0]
            listed = [serving.item_ids.id_of(r) for r in range(0, len(serving.items), 7)][:30]
            vector = serving.user_vector(user)
            scores = serving.scores_of(vector, serving.item_rows(listed), mode="repeat")
            expected = [listed[i] for i in np.lexsort((serving.item_rows(listed), -scores))]
            assert [i.item_id for i in client.rank(user, listed).items] == expected
    finally:
        stop_process(process)


# Run in a fresh process, so that nothing earlier in it compiled the kernels.
_WARM_UP_CHECK = """
import sys
import numpy as np
from shelfrank.core.explain import explain_scores
from shelfrank.server import compiled_explain
from shelfrank.server.compiled_blend import _kernel
from shelfrank.server.registry import load_state
KERNELS = [
    _kernel,
    compiled_explain.explained_parts,
    compiled_explain.add_history_votes,
    compiled_explain.member_votes,
    compiled_explain._credits_kernel,
    compiled_explain._summary_kernel,
]
def signatures():
    return [len(kernel.signatures) for kernel in KERNELS]
state = load_state(sys.argv[1])
loaded = signatures()
model = state.model
allowed = np.ones(len(model.items), np.bool_)
allowed[::3] = False
fresh, weights = np.array([1, 5, 5], np.int64), np.array([1.0, 2.0, 1.0], np.float32)
tokens = list(model.user_token_embeddings.vocabulary.ids[:2])
users = [(u, model.user_vector(u)) for u in model.user_ids.ids[:5]] + [
    (u, model.user_vector(u, history_rows=fresh, history_weights=weights))
    for u in model.user_ids.ids[:2]
] + [
    ("new", model.user_vector("new", history_rows=fresh, history_weights=weights)),
    ("profile", model.user_vector("profile", tokens=tokens)),
    ("anonymous", model.user_vector("anonymous")),
]
for user_id, user in users:
    for mode in ("new", "repeat"):
        model.rank(user, 10, exclude=model.item_rows([model.items.item_ids.ids[0]]), mode=mode)
        top = model.rank(user, 10, allowed=allowed, mode=mode)
        for stepwise in (False, True):
            explain_scores(
                model, user_id, user, top.indices, top.scores, mode=mode, stepwise=stepwise
            )
print(int(model.items.pruned is not None), *loaded, *signatures())
"""


@pytest.fixture(scope="module")
def unpruned_model_dir(shop: SynthData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose table gets no pruned scan (8 dimensions: the scan's basis would need
    more than half of them), so the server ranks it with numpy but explains compiled."""
    from shelfrank.server.hybrid import HybridModel

    out = tmp_path_factory.mktemp("unpruned") / "model"
    config = TrainConfig(epochs=3, components=8, seed=1, num_threads=1, min_validation_users=20)
    HybridModel.train(shop.interactions, config, items=shop.items, users=shop.users).save(out)
    return out


@pytest.mark.parametrize("pruned", [True, False], ids=["pruned", "unpruned"])
def test_loading_a_model_compiles_the_blended_search_before_it_serves(
    model_dir: Path, unpruned_model_dir: Path, pruned: bool
) -> None:
    # Compiling cold takes seconds, more than a caller's deadline (the first Recommend of a
    # fresh install once timed out in CI): load_state compiles the ranking and the
    # explanation kernels, or loads their cached code, with the argument types serving
    # uses, so no served ranking or explanation compiles.
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_CHECK, str(model_dir if pruned else unpruned_model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    has_scan, *counts = map(int, done.stdout.split())
    assert has_scan == pruned
    loaded, served = counts[: len(counts) // 2], counts[len(counts) // 2 :]
    ranking, explaining, *steps = loaded
    assert ranking >= (1 if pruned else 0)
    assert explaining >= 1
    assert all(count >= 1 for count in steps[2:])  # token credits, summaries: every model
    # Serving users of every kind (trained, folded in, new, by profile, anonymous), with
    # exclusions, filters and explanations both ways, needed no other argument types.
    assert served == loaded


def test_cli_recommend_uses_repeat_mode_without_exclude_seen(
    model_dir: Path, tmp_path: Path
) -> None:
    serving, _ = load_serving_model(model_dir)
    users = list(serving.user_ids.ids)[:5]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n", encoding="utf-8")
    outputs = {}
    for flags in ([], ["--exclude-seen"]):
        out = tmp_path / f"recs{len(flags)}.jsonl"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shelfrank.server",
                "recommend",
                "--model",
                str(model_dir),
                "--users",
                str(tmp_path / "users.txt"),
                "--k",
                "10",
                "--out",
                str(out),
                *flags,
            ],
            check=True,
            capture_output=True,
        )
        outputs[len(flags)] = [json.loads(line) for line in out.read_text().splitlines()]
    for index, user in enumerate(users):
        seen = {serving.item_ids.id_of(int(r)) for r in serving.seen_rows(user)}
        (repeat,) = recommend_users(serving, [user], 10, mode="repeat")
        (fresh,) = recommend_users(serving, [user], 10, exclude_seen=True, mode="new")
        assert [i["item_id"] for i in outputs[0][index]["items"]] == [i for i, _ in repeat.items]
        assert [i["item_id"] for i in outputs[1][index]["items"]] == [i for i, _ in fresh.items]
        assert not seen & {i["item_id"] for i in outputs[1][index]["items"]}


def test_temporal_protocol_reports_three_settings_against_the_baselines(
    shop: SynthData, tmp_path: Path
) -> None:
    write_interactions(tmp_path / "events.csv", shop.interactions)
    write_features(tmp_path / "items.csv", shop.items)
    write_features(tmp_path / "users.csv", shop.users)
    report_path = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "shelfrank.server",
            "evaluate",
            "--protocol",
            "temporal",
            "--interactions",
            str(tmp_path / "events.csv"),
            "--items",
            str(tmp_path / "items.csv"),
            "--users",
            str(tmp_path / "users.csv"),
            "--test-days",
            "30",
            "--epochs",
            "3",
            "--components",
            "8",
            "--seed",
            "1",
            "--threads",
            "1",
            "--quiet",
            "--json",
            str(report_path),
            "--plot",
            str(tmp_path / "report.png"),
        ],
        check=True,
        capture_output=True,
    )
    report = json.loads(report_path.read_text())
    settings = {name.split("/")[0] for name in report["models"]}
    assert settings == {"repeat", "new", "cold-users"}
    for setting in settings:
        names = {n.split("/")[1] for n in report["models"] if n.startswith(setting + "/")}
        assert {"shelfrank", "popularity-recent", "bought-most", "ease", "user-knn"} <= names
    assert (tmp_path / "report.png").stat().st_size > 0
    assert (tmp_path / "report-blend.png").stat().st_size > 0
    # "What you bought most" ranks the shopper's own purchases: it must beat plain
    # popularity when buying again counts (consumables are rebought in this shop).
    models = report["models"]
    assert (
        models["repeat/bought-most"]["precision"] > models["repeat/popularity-recent"]["precision"]
    )
