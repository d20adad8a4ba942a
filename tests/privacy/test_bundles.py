"""Blanking shoppers in a model bundle: the erased shopper's rows are emptied and their id
replaced, the bundle still loads, and every other shopper is answered the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.snapshot import Snapshot
from pipelines.privacy.scan import scan_file
from pipelines.promotion import layout
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from pipelines.search.model import SearchModel
from tests.served import ServedShop

pytestmark = pytest.mark.slow


def _bundle(shop: ServedShop, model: str, dst: Path) -> Path:
    """A copy of the served version's bundle folder."""
    version = (shop.rec if model == MODEL_NAME else shop.search)[0]
    src = shop.root / "bucket" / layout.version_key(model, version, layout.BUNDLE)
    shutil.copytree(src, dst)
    return dst


def _active(shop: ServedShop, n: int) -> list[str]:
    events = Snapshot.open(shop.trained.snapshot).read("events", ["user_id"]).to_pandas()
    return [str(u) for u in events["user_id"].value_counts().index[:n]]


def _lists(rec: Recommender, users: list[str]) -> pd.DataFrame:
    out = rec.recommend(RecommendRequest(users, 10))
    return out.sort_values(["user_id", "rank"]).reset_index(drop=True)


def test_a_recommender_bundle_without_a_shopper(served_shop: ServedShop, tmp_path: Path) -> None:
    gone, *others = _active(served_shop, 6)
    folder = _bundle(served_shop, MODEL_NAME, tmp_path / "bundle")
    rec = Recommender.load(folder)
    before = _lists(rec, others)
    anonymous = _lists(rec, ["never-seen-before"])
    assert rec.erase_users([gone, "not-a-shopper"]) == 1
    assert rec.erase_users([gone]) == 0  # already gone
    rec.save(tmp_path / "erased")
    again = Recommender.load(tmp_path / "erased")
    pd.testing.assert_frame_equal(_lists(again, others), before)
    theirs = _lists(again, [gone])
    assert theirs["item_id"].tolist() == anonymous["item_id"].tolist()
    assert not any(
        scan_file(p, [gone]).traces for p in (tmp_path / "erased").rglob("*") if p.is_file()
    )
    ids = again.ctx.user_ids.astype(str)
    assert gone not in set(ids) and len(ids) == len(rec.ctx.user_ids)
    assert sum(i.startswith("erased-") for i in ids) == 1


def test_a_search_bundle_without_a_shopper(served_shop: ServedShop, tmp_path: Path) -> None:
    folder = _bundle(served_shop, SEARCH_MODEL, tmp_path / "bundle")
    model = SearchModel.load(folder)
    assert model.profiles is not None
    known = [u for u in _active(served_shop, 20) if u in model.profiles.user_row]
    gone, other = known[0], known[1]
    rows = np.arange(min(20, len(model.index.item_ids)))
    theirs_before = model.personal(other, rows)
    assert model.personal(gone, rows) is not None
    assert model.erase_users([gone]) == 1
    model.save(tmp_path / "erased")
    again = SearchModel.load(tmp_path / "erased")
    assert again.personal(gone, rows) is None
    np.testing.assert_array_equal(again.personal(other, rows), theirs_before)
    assert not any(
        scan_file(p, [gone]).traces for p in (tmp_path / "erased").rglob("*") if p.is_file()
    )
