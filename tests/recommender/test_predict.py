"""The users file of `shopml recommend`, and the request it becomes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.errors import ShopMLError
from pipelines.recommender.predict import RecommendRequest, read_users_file, request_from_frame


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "users.csv"
    path.write_text(text)
    return path


def test_a_users_file_becomes_a_request(tmp_path: Path) -> None:
    frame = read_users_file(
        _write(tmp_path, "user_id,age,gender,recent_items,exclude\nu1,34,F,i1|i2,i9\n007,,,,\n")
    )
    assert frame["user_id"].tolist() == ["u1", "007"]  # ids stay text
    assert frame["recent_items"].tolist() == [["i1", "i2"], []]
    request = request_from_frame(frame, k=5, explain=True)
    assert request.exclude == [["i9"], []] and request.age is not None and request.age[0] == 34
    assert request.gender == ["F", None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_id,age\nu1,thirty\n", "row 1, column 'age': 'thirty' is not an age in years"),
        (
            "user_id,age\nu1,34\nu2,430\n",
            "row 2, column 'age': '430' is not an age between 0 and 120",
        ),
        ("user_id,agee\nu1,34\n", "unknown column\\(s\\) \\['agee'\\]"),
        ("age\n34\n", "needs a user_id column; it has age"),
        ("user_id,age\n,34\n", "row 1, column 'user_id'"),
    ],
)
def test_bad_values_are_named_by_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ShopMLError, match=message):
        read_users_file(_write(tmp_path, text))


def test_a_parquet_users_file_keeps_its_lists(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": ["u1", "u2"], "recent_items": [["i1"], None]}).to_parquet(path)
    assert read_users_file(path)["recent_items"].tolist() == [["i1"], []]


def test_a_request_checks_its_lengths() -> None:
    with pytest.raises(ShopMLError, match="age: 1 values for 2 user ids"):
        RecommendRequest(["a", "b"], age=[30.0])
    with pytest.raises(ShopMLError, match="k must be >= 1"):
        RecommendRequest(["a"], k=0)
