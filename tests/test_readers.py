"""The import format: every accepted form and every bad-input path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shelfrank.core.errors import DataFormatError
from shelfrank.core.events import EventType
from shelfrank.datasets import read_features, read_interactions, write_features, write_interactions
from shelfrank.datasets.records import FeatureTable, Interactions


def _file(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_minimal_file_defaults_to_views(tmp_path: Path) -> None:
    table, report = read_interactions(_file(tmp_path, "user_id,item_id\nu1,i1\nu2,i2\n"))
    assert table.user_ids == ["u1", "u2"]
    assert table.item_ids == ["i1", "i2"]
    assert table.event_types.tolist() == [EventType.VIEW, EventType.VIEW]
    assert np.isnan(table.timestamps).all()
    assert np.isnan(table.weights).all()
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (2, 2, 0)


def test_every_optional_column_and_timestamp_form(tmp_path: Path) -> None:
    text = (
        "item_id,user_id,event_type,timestamp,weight,event_id\n"
        "i1,u1,purchase,1700000000,2.5,e1\n"
        "i2,u1,ADD_TO_CART,1700000000500,,e2\n"
        "i3,u1,dismiss,2023-11-14T22:13:20Z,,\n"
        "i4,u1,search,2023-11-14T22:13:20,,\n"
        "i5,u1,,,,\n"
    )
    table, report = read_interactions(_file(tmp_path, text))
    assert report.rows_rejected == 0
    assert table.event_types.tolist() == [3, 2, 5, 4, 1]
    assert table.timestamps[:4].tolist() == [
        1_700_000_000,
        1_700_000_000.5,
        1_700_000_000,
        1_700_000_000,
    ]
    assert table.weights[0] == 2.5
    assert math.isnan(table.weights[1])
    assert table.event_ids == ["e1", "e2", "", "", ""]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",i1,view,,,", "missing user_id"),
        ("u1, ,view,,,", "missing item_id"),
        ("u1,i1,like,,,", "event_type: unknown value 'like'"),
        ("u1,i1,view,yesterday,,", "timestamp 'yesterday' is not unix time or ISO 8601"),
        ("u1,i1,view,-5,,", "non-negative finite"),
        ("u1,i1,view,,heavy,", "weight 'heavy' is not a number"),
        ("u1,i1,view,,-1,", "weight '-1' must be finite and >= 0"),
        ("u1,i1,view,,inf,", "must be finite"),
        ("u1,i1,view,,", "expected 6 columns, got 5"),
        ("u1,i1,view,,,,", "expected 6 columns, got 7"),
        ("u1," + "x" * 257 + ",view,,,", "item_id longer than 256 bytes"),
        ("u1,i1,view,,," + "e" * 300, "event_id longer than 256 bytes"),
        # As Track refuses them: no store could hold a NUL, and the ids would differ.
        ("user one\x01,i1,view,,,", "user_id 'user one\\x01' contains control characters"),
        ("u1,item\x00one,view,,,", "item_id 'item\\x00one' contains control characters"),
        ("u1,i1,view,,,ev\x7f", "event_id 'ev\\x7f' contains control characters"),
    ],
)
def test_bad_rows_are_reported_with_file_line_and_reason(
    tmp_path: Path, row: str, reason: str
) -> None:
    header = "user_id,item_id,event_type,timestamp,weight,event_id\n"
    path = _file(tmp_path, header + "ok,ok,view,,,\n" + row + "\nok2,ok2,view,,,\n")
    table, report = read_interactions(path)
    assert table.user_ids == ["ok", "ok2"]
    assert report.rows_rejected == 1
    assert report.rows_read == 3
    error = report.errors[0]
    assert (error.path, error.line) == (str(path), 3)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:3: ")
    with pytest.raises(DataFormatError, match=rf"events\.csv:3: .*{reason[:12]}"):
        read_interactions(path, strict=True)


def test_invalid_utf8_row_is_reported_not_fatal(tmp_path: Path) -> None:
    path = _file(tmp_path, "")
    path.write_bytes(b"user_id,item_id\nu1,i1\nu\xff,i2\nu3,i3\n")
    table, report = read_interactions(path)
    assert table.user_ids == ["u1", "u3"]
    assert report.errors[0].line == 3
    assert "not valid UTF-8" in report.errors[0].reason


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("user,item_id", "unknown column 'user'"),
        ("user_id,event_type", "missing required column(s) item_id"),
        ("user_id,item_id,user_id", "repeats column 'user_id'"),
        ("user_id,,item_id", "empty column name"),
    ],
)
def test_wrong_header_is_a_clear_error(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(DataFormatError, match=r"events\.csv:1: ") as info:
        read_interactions(_file(tmp_path, header + "\nu1,i1\n"))
    assert message in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="file is empty"):
        read_interactions(_file(tmp_path, ""))
    with pytest.raises(DataFormatError, match="file not found"):
        read_interactions(tmp_path / "absent.csv")
    with pytest.raises(DataFormatError, match="is a directory"):
        read_interactions(tmp_path)


def test_jsonl_interactions(tmp_path: Path) -> None:
    text = (
        '{"user_id": "u1", "item_id": "i1", "event_type": "purchase", "timestamp": 1700000000}\n'
        "\n"
        '{"user_id": "u2", "item_id": 7}\n'
        "not json\n"
        '{"user_id": "u3", "item_id": "i3", "colour": "red"}\n'
        '["a list"]\n'
        '{"user_id": "u4"}\n'
        '{"user_id": "u5", "item_id": {"nested": 1}}\n'
    )
    table, report = read_interactions(_file(tmp_path, text, "events.jsonl"))
    assert table.user_ids == ["u1", "u2"]
    assert table.item_ids == ["i1", "7"]
    reasons = [(e.line, e.reason) for e in report.errors]
    assert [line for line, _ in reasons] == [4, 5, 6, 7, 8]
    assert "invalid JSON" in reasons[0][1]
    assert "unknown field 'colour'" in reasons[1][1]
    assert "JSON object" in reasons[2][1]
    assert "missing required field(s) item_id" in reasons[3][1]
    assert "unsupported value" in reasons[4][1]


def test_feature_tokens_split_on_pipes_and_skip_empty_cells(tmp_path: Path) -> None:
    text = "item_id,category,tags,brand\ni1,shoes,red|sale| |red,\ni2,,,acme\ni1,dup,,\n,x,,\n"
    table, report = read_features(_file(tmp_path, text, "items.csv"), "item_id")
    assert table.columns == ("category", "tags", "brand")
    assert table.as_dict() == {
        "i1": ("category=shoes", "tags=red", "tags=sale"),
        "i2": ("brand=acme",),
    }
    assert [(e.line, e.reason) for e in report.errors] == [
        (4, "duplicate item_id 'i1' (first at line 2)"),
        (5, "missing item_id"),
    ]


def test_ids_and_tokens_with_control_characters_are_rejected_by_line(tmp_path: Path) -> None:
    """A file gives no id or token that Track or UpsertItems would refuse."""
    text = "item_id,category\ni1,shoes\ni\x002,boots\ni3,so\x01cks\ni4,hats\n"
    table, report = read_features(_file(tmp_path, text, "items.csv"), "item_id")
    assert table.as_dict() == {"i1": ("category=shoes",), "i4": ("category=hats",)}
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "item_id 'i\\x002' contains control characters"),
        (4, "feature 'category=so\\x01cks' contains control characters"),
    ]


def test_feature_header_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="missing required column"):
        read_features(_file(tmp_path, "id,category\n1,a\n", "items.csv"), "item_id")
    with pytest.raises(DataFormatError, match=r"must not contain '=' or '\|'"):
        read_features(_file(tmp_path, "item_id,a=b\n1,a\n", "items.csv"), "item_id")


def test_jsonl_features_accept_lists(tmp_path: Path) -> None:
    text = '{"user_id": "u1", "segment": "vip", "interests": ["run", "hike"]}\n'
    table, _ = read_features(_file(tmp_path, text, "users.jsonl"), "user_id")
    assert table.as_dict() == {"u1": ("segment=vip", "interests=run", "interests=hike")}


ids = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            ids,
            ids,
            st.sampled_from(list(EventType)),
            st.integers(0, 2_000_000_000),
            st.none() | st.floats(0, 10),
            st.none() | ids,
        ),
        max_size=20,
    )
)
def test_interactions_write_read_round_trip(
    tmp_path: Path, rows: list[tuple[str, str, EventType, int, float | None, str | None]]
) -> None:
    table = Interactions.from_rows(
        [
            (
                u.strip() or "x",
                i.strip() or "y",
                t,
                float(ts),
                math.nan if w is None else w,
                (e or "").strip(),
            )
            for u, i, t, ts, w, e in rows
        ]
    )
    path = tmp_path / "rt.csv"
    write_interactions(path, table)
    back, report = read_interactions(path)
    assert report.rows_rejected == 0
    assert back.user_ids == table.user_ids
    assert back.item_ids == table.item_ids
    assert back.event_types.tolist() == table.event_types.tolist()
    assert np.array_equal(back.timestamps, table.timestamps)
    assert np.allclose(back.weights, table.weights, equal_nan=True)
    assert back.event_ids == table.event_ids


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        ids.filter(lambda s: s.strip() == s and "," not in s),
        st.lists(st.sampled_from(["a", "b c", "d"]), max_size=3, unique=True),
        max_size=10,
    )
)
def test_features_write_read_round_trip(tmp_path: Path, entities: dict[str, list[str]]) -> None:
    table = FeatureTable(
        "item_id",
        ("tags",),
        list(entities),
        [tuple(f"tags={v}" for v in vals) for vals in entities.values()],
    )
    path = tmp_path / "items.csv"
    write_features(path, table)
    back, report = read_features(path, "item_id")
    assert report.rows_rejected == 0
    assert back.as_dict() == table.as_dict()
