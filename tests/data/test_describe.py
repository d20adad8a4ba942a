"""`shopml data describe` figures against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.conform import conform
from pipelines.data.describe import describe_snapshot, gini
from pipelines.data.snapshot import write_snapshot


def test_gini_bounds() -> None:
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)  # (n-1)/n when one has everything
    assert gini(np.array([1, 3])) == pytest.approx(0.25)


def test_describe_hand_made_snapshot(tmp_path: Path) -> None:
    users = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "signup_ts": ["2025-12-01", "2026-01-10", "2026-01-20"],
            "age": ["30", None, "41"],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["x", "y", "z", "w"],
            "title": ["X", "Y", "Z", "W"],
            "category": ["A/B", "A/B", "A/C", "A/C"],
            "price": ["1", "2", "3", "4"],
            "currency": ["EUR"] * 4,
            "created_ts": ["2025-01-01", "2025-01-01", "2025-01-01", "2026-01-25"],
        }
    )
    # a: x view, x cart, x purchase, y view (Jan 2); b: x view (Jan 12); c: z view, w view (Jan 30).
    ev = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(7)],
            "user_id": ["a", "a", "a", "a", "b", "c", "c"],
            "item_id": ["x", "x", "x", "y", "x", "z", "w"],
            "event_type": ["view", "add_to_cart", "purchase", "view", "view", "view", "view"],
            "ts": ["2026-01-02T10:00Z", "2026-01-02T10:01Z", "2026-01-02T10:02Z", "2026-01-02T10:03Z",
                   "2026-01-12T09:00Z", "2026-01-30T20:00Z", "2026-01-30T20:05Z"],
            "session_id": ["s1", "s1", "s1", "s1", "s2", "s3", "s3"],
        }
    )  # fmt: skip
    with write_snapshot(tmp_path / "s", source="test", producer={}) as w:
        w.write_table("users", conform("users", users, file="u"))
        w.write_table("items", conform("items", items, file="i"))
        w.write_table("events", conform("events", ev, file="e"))
    d = describe_snapshot(tmp_path / "s", window_days=14)

    assert d["events"]["by_type"] == {"view": 5, "add_to_cart": 1, "purchase": 1, "search_click": 0}
    assert d["events"]["sessions"] == 3
    assert d["funnel"] == {
        "cart_per_view": pytest.approx(0.2),
        "purchase_per_cart": pytest.approx(1.0),
    }
    # 5 distinct (user, item) pairs out of 3 users x 4 items.
    assert d["activity"]["sparsity"] == pytest.approx(1 - 5 / 12)
    # Events per item: x 4, y 1, z 1, w 1.
    assert d["popularity"]["gini"] == pytest.approx(gini(np.array([4, 1, 1, 1])))
    assert d["popularity"]["top_1pct_share"] == pytest.approx(4 / 7)
    # Window = the last 14 days before Jan 30 20:05: only c is active, first seen there; z and w too.
    assert d["cold_start"]["new_users_in_window"] == pytest.approx(1.0)
    assert d["cold_start"]["new_items_in_window"] == pytest.approx(1.0)
    # Period starts Jan 2 10:00: b and c signed up after, a before; w was created after.
    assert d["cold_start"]["users_signed_up_in_period"] == pytest.approx(2 / 3)
    assert d["cold_start"]["items_created_in_period"] == pytest.approx(1 / 4)
    assert d["users"]["with_age"] == pytest.approx(2 / 3)
