"""Experiments: the configuration file, assignment of users to variants, activity."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfrank.core.errors import DataFormatError, InvalidInputError
from shelfrank.core.experiments import (
    Experiment,
    Variant,
    active_experiment,
    assign,
    bucket_of,
    load_experiments,
    parse_time,
)

HOME = """
[[experiment]]
name = "home"
surface = "recommend"
salt = "2026-12"
start = "2026-12-01T00:00:00Z"
end = "2027-01-01T00:00:00+01:00"
control = "control"
[[experiment.variant]]
name = "control"
share = 50
setting = "hybrid"
[[experiment.variant]]
name = "pop"
share = 50
setting = "popularity"
diversity = 0.3
exploration = 0.1
max_per_feature = { "brand=" = 2, "colour=" = 1 }
"""

DEC_1 = 1_796_083_200_000  # 2026-12-01T00:00:00Z
JAN_1_CET = 1_798_758_000_000  # 2027-01-01T00:00:00+01:00


def write(tmp_path: Path, text: str, name: str = "experiments.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def two_variants(**extra: object) -> str:
    lines = ["[[experiment]]", 'name = "home"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    lines += [
        "[[experiment.variant]]",
        'name = "a"',
        "share = 50",
        'setting = "hybrid"',
        "[[experiment.variant]]",
        'name = "b"',
        "share = 50",
        'setting = "popularity"',
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- loading


def test_load_toml(tmp_path: Path) -> None:
    (home,) = load_experiments(write(tmp_path, HOME))
    assert home == Experiment(
        name="home",
        salt="2026-12",
        surface="recommend",
        start_ms=DEC_1,
        end_ms=JAN_1_CET,
        variants=(
            Variant("control", 50, "hybrid"),
            Variant("pop", 50, "popularity", 0.3, 0.1, (("brand=", 2), ("colour=", 1))),
        ),
        control="control",
    )


def test_defaults(tmp_path: Path) -> None:
    (home,) = load_experiments(write(tmp_path, two_variants()))
    assert home.surface == "recommend"
    assert home.salt == "home"
    assert home.control == "a"
    assert home.start_ms is None
    assert home.end_ms is None
    assert home.variants[0].diversity is None
    assert home.variants[0].max_per_feature is None


def test_load_json_same_as_toml(tmp_path: Path) -> None:
    document = {
        "experiment": [
            {
                "name": "home",
                "surface": "recommend",
                "salt": "2026-12",
                "start": "2026-12-01T00:00:00Z",
                "end": "2027-01-01T00:00:00+01:00",
                "control": "control",
                "variant": [
                    {"name": "control", "share": 50, "setting": "hybrid"},
                    {
                        "name": "pop",
                        "share": 50,
                        "setting": "popularity",
                        "diversity": 0.3,
                        "exploration": 0.1,
                        "max_per_feature": {"colour=": 1, "brand=": 2},
                    },
                ],
            }
        ]
    }
    from_json = load_experiments(write(tmp_path, json.dumps(document), "experiments.json"))
    assert from_json == load_experiments(write(tmp_path, HOME))


def test_native_toml_datetime(tmp_path: Path) -> None:
    text = two_variants().replace(
        'name = "home"\n', 'name = "home"\nstart = 2026-12-01T00:00:00Z\n'
    )
    (home,) = load_experiments(write(tmp_path, text))
    assert home.start_ms == DEC_1


def test_empty_file(tmp_path: Path) -> None:
    assert load_experiments(write(tmp_path, "")) == ()


def test_parse_time() -> None:
    assert parse_time("2026-12-01T00:00:00Z", "start") == DEC_1
    assert parse_time("2026-12-01t01:00:00.5+01:00", "start") == DEC_1 + 500
    for bad in ("2026-12-01", "2026-12-01T00:00:00", "yesterday", 17):
        with pytest.raises(InvalidInputError, match="start"):
            parse_time(bad, "start")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            two_variants().replace("share = 50\n", "share = 40\n", 1),
            r'experiment "home": shares must add up to 100, got 40 \("a"\) \+ 50 \("b"\) = 90',
        ),
        (
            two_variants().replace("share = 50\n", "share = 50.0\n", 1),
            r'experiment "home": variant "a": share: must be an integer percent',
        ),
        (
            two_variants()
            .replace("share = 50\n", "share = 0\n", 1)
            .replace("share = 50\n", "share = 100\n"),
            r'variant "a": share: must be an integer percent in 1..100, got 0',
        ),
        (
            two_variants().replace("share = 50\n", "share = 150\n", 1),
            r'variant "a": share: must be an integer percent in 1..100, got 150',
        ),
        (
            two_variants().replace("share = 50\n", 'share = "50"\n', 1),
            r'variant "a": share: must be an integer percent',
        ),
        (
            two_variants().replace('name = "b"', 'name = "a"'),
            r'experiment "home": variant "a": duplicate name',
        ),
        (two_variants() + two_variants(), r'experiment "home": duplicate name'),
        (
            two_variants().replace('"popularity"', '"bandit"'),
            r"variant \"b\": setting: unknown value 'bandit' \(expected one of 'hybrid', "
            r"'popularity', or 'model:<version>'",
        ),
        (
            two_variants().replace('"popularity"', '"model:"'),
            r"variant \"b\": setting: 'model:' must name a model version after 'model:'",
        ),
        (
            two_variants().replace("share = 50\n", "share = 50\nshar = 1\n", 1),
            r"experiment \"home\": variant \"a\": unknown key 'shar'",
        ),
        (two_variants(surfce="similar"), r"experiment \"home\": unknown key 'surfce'"),
        (two_variants(surface="search"), r"experiment \"home\": surface: unknown value 'search'"),
        (
            two_variants(surface="similar").replace(
                "share = 50\n", "share = 50\ndiversity = 0.3\n", 1
            ),
            r"experiment \"home\": variant \"a\": diversity: not applied on surface 'similar'",
        ),
        (
            two_variants(control="c"),
            r"experiment \"home\": control: 'c' is not one of its variants",
        ),
        (
            two_variants(start="2026-12-02T00:00:00Z", end="2026-12-01T00:00:00Z"),
            r'experiment "home": end: must be after start',
        ),
        (
            two_variants(start="2026-12-01T00:00:00Z", end="2026-12-01T00:00:00Z"),
            r'experiment "home": end: must be after start',
        ),
        (two_variants(start="2026-12-01"), r'experiment "home": start: must be an RFC 3339'),
        (
            two_variants().replace("share = 50\n", "share = 50\ndiversity = 1.5\n", 1),
            r'experiment "home": variant "a": diversity: must be in \[0, 1\]',
        ),
        (
            two_variants().replace("share = 50\n", "share = 50\nexploration = true\n", 1),
            r'experiment "home": variant "a": exploration: must be a number',
        ),
        (
            two_variants().replace(
                "share = 50\n", "share = 50\nmax_per_feature = { brand = 2 }\n", 1
            ),
            r"experiment \"home\": variant \"a\": max_per_feature\['brand'\]: must be a column "
            r"followed by '='",
        ),
        (
            two_variants().replace(
                "share = 50\n", 'share = 50\nmax_per_feature = { "brand=" = 0 }\n', 1
            ),
            r"variant \"a\": max_per_feature\['brand='\]: must be a positive integer, got 0",
        ),
        (
            two_variants().replace("share = 50\n", "share = 50\nmax_per_feature = 2\n", 1),
            r'variant "a": max_per_feature: must be a table',
        ),
        ('[[experiment]]\nname = "home"\n', r'experiment "home": needs at least one'),
        ('[[experiment]]\nsurface = "rank"\n', r"experiment #1: name: must be a non-empty"),
        ('[[experiment]]\nname = ""\n', r"experiment #1: name: must be a non-empty"),
        ("experiments = []\n", r"unknown key 'experiments'"),
        (
            two_variants().replace('name = "a"\n', ""),
            r'experiment "home": variant #1: name: must be a non-empty string',
        ),
        (
            two_variants().replace("share = 50\n", "", 1).replace("share = 50\n", "share = 100\n"),
            r'variant "a": share: missing',
        ),
    ],
)
def test_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=expected) as caught:
        load_experiments(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert isinstance(caught.value, InvalidInputError)


def test_overlapping_windows(tmp_path: Path) -> None:
    first = two_variants(start="2026-12-01T00:00:00Z", end="2026-12-15T00:00:00Z")
    second = two_variants(start="2026-12-10T00:00:00Z").replace('"home"', '"later"')
    path = write(tmp_path, first + second)
    with pytest.raises(
        DataFormatError,
        match=r'experiment "later": its active window overlaps that of experiment "home" on '
        r"surface 'recommend' \(from 2026-12-10T00:00:00Z to 2026-12-15T00:00:00Z\)",
    ):
        load_experiments(path)
    # open-ended on both sides overlaps anything on the surface
    path = write(tmp_path, first + two_variants().replace('"home"', '"always"'))
    with pytest.raises(DataFormatError, match=r"overlaps .* \(from 2026-12-01T00:00:00Z"):
        load_experiments(path)


def test_windows_that_do_not_overlap(tmp_path: Path) -> None:
    first = two_variants(start="2026-12-01T00:00:00Z", end="2026-12-15T00:00:00Z")
    adjacent = two_variants(start="2026-12-15T00:00:00Z").replace('"home"', '"next"')
    earlier = two_variants(end="2026-12-01T00:00:00Z").replace('"home"', '"before"')
    other_surface = two_variants(surface="similar").replace('"home"', '"similar"')
    loaded = load_experiments(write(tmp_path, first + adjacent + earlier + other_surface))
    assert [e.name for e in loaded] == ["home", "next", "before", "similar"]


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[[experiment]]\nname = "home"\nshare = = 2\n')
    with pytest.raises(DataFormatError, match=r"invalid TOML: .*\(column \d+\)$") as caught:
        load_experiments(path)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: ")


def test_json_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '{"experiment": [\n  {"name": }\n]}', "experiments.json")
    with pytest.raises(DataFormatError, match=r"invalid JSON") as caught:
        load_experiments(path)
    assert caught.value.line == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="cannot read"):
        load_experiments(tmp_path / "absent.toml")


def test_constructed_experiments_are_checked() -> None:
    control = Variant("control", 50)
    with pytest.raises(InvalidInputError, match="shares must add up to 100"):
        Experiment("x", "x", "recommend", None, None, (control,), "control")
    with pytest.raises(InvalidInputError, match="control"):
        Experiment("x", "x", "recommend", None, None, (Variant("a", 100),), "control")
    with pytest.raises(InvalidInputError, match="share"):
        Variant("a", True)
    with pytest.raises(InvalidInputError, match="must name a model version"):
        Variant("a", 100, "model:")
    assert Variant("a", 100, "model:2026-12-01").pinned_version == "2026-12-01"
    assert Variant("a", 100, "hybrid").pinned_version is None


# ---------------------------------------------------------------- assignment


def experiment(*shares: int, salt: str = "2026-12") -> Experiment:
    variants = tuple(Variant(f"v{i}", share) for i, share in enumerate(shares))
    return Experiment("home", salt, "recommend", None, None, variants, "v0")


def test_bucket_vectors() -> None:
    """Fixed vectors: other implementations of the assignment must reproduce these."""
    digest = hashlib.sha256("2026-12\x1fü".encode()).digest()
    assert digest[:8].hex() == "c14dac8f7e78500b"
    assert bucket_of("2026-12", "ü") == 0xC14DAC8F7E78500B % 10_000 == 6987
    assert bucket_of("2026-12", "alice") == 1408
    assert bucket_of("2026-12", "bob") == 4188
    assert bucket_of("2026-12", "") == 8421
    home = experiment(50, 50)
    assert [assign(home, u).name for u in ("alice", "bob", "ü", "")] == ["v0", "v0", "v1", "v1"]
    skewed = experiment(10, 5, 85)  # v0: 0..999, v1: 1000..1499, v2: 1500..9999
    assert [assign(skewed, u).name for u in ("alice", "bob", "ü")] == ["v1", "v2", "v2"]


def test_assignment_follows_shares() -> None:
    home = experiment(20, 30, 50)
    counts = Counter(assign(home, f"user-{n}").name for n in range(20_000))
    for name, share in (("v0", 0.2), ("v1", 0.3), ("v2", 0.5)):
        assert abs(counts[name] / 20_000 - share) < 0.015


def test_salt_reshuffles() -> None:
    users = [f"user-{n}" for n in range(2_000)]
    first = [assign(experiment(50, 50), u).name for u in users]
    again = [assign(experiment(50, 50), u).name for u in users]
    other = [assign(experiment(50, 50, salt="2027-01"), u).name for u in users]
    assert first == again
    changed = sum(a != b for a, b in zip(first, other, strict=True)) / len(users)
    assert 0.4 < changed < 0.6  # independent halves: about half change


@given(st.text(max_size=30), st.text(max_size=30))
def test_bucket_in_range_and_consistent(salt: str, user: str) -> None:
    bucket = bucket_of(salt, user)
    assert 0 <= bucket < 10_000
    home = experiment(33, 33, 34, salt=salt)
    index = 0 if bucket < 3300 else 1 if bucket < 6600 else 2
    assert assign(home, user).name == f"v{index}"


# ---------------------------------------------------------------- activity


def test_active_experiment() -> None:
    variants = (Variant("a", 100),)
    december = Experiment("dec", "s", "recommend", DEC_1, DEC_1 + 1000, variants, "a")
    later = Experiment("later", "s", "recommend", DEC_1 + 1000, None, variants, "a")
    similar = Experiment("sim", "s", "similar", None, None, variants, "a")
    every = (december, later, similar)
    assert active_experiment(every, "recommend", DEC_1 - 1) is None
    assert active_experiment(every, "recommend", DEC_1) is december
    assert active_experiment(every, "recommend", DEC_1 + 999) is december
    assert active_experiment(every, "recommend", DEC_1 + 1000) is later  # end excluded
    assert active_experiment(every, "recommend", 10**15) is later
    assert active_experiment(every, "similar", 0) is similar
    assert active_experiment(every, "rank", DEC_1) is None
    assert active_experiment((), "recommend", DEC_1) is None
