"""Blanking shoppers in a model bundle: the erased shopper's rows are emptied and their id
replaced, the bundle still loads, and every other shopper is answered the same."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.data.snapshot import Snapshot
from pipelines.errors import ShopMLError
from pipelines.privacy.audit import audit
from pipelines.privacy.bundles import erase_promoted
from pipelines.privacy.forget import forget
from pipelines.privacy.mlflow_store import scan_mlflow
from pipelines.privacy.scan import scan_file
from pipelines.promotion import erasure, layout
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.promotion.ledger import read_ledger
from pipelines.promotion.promote import promote
from pipelines.promotion.verify import UNFINISHED, verify_model
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.plan import (
    plan_training,
    prepare_features,
    train_candidates,
    train_ranker,
)
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from pipelines.search.model import SearchModel
from pipelines.settings import load_settings
from serving.versions import ServedVersion, load_version
from tests.served import ServedShop, approval
from tests.shops import LIGHT

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


def _served(bucket: Bucket, model: str, cache: Path) -> ServedVersion:
    pointer = layout.read_pointer(bucket, model)
    assert pointer is not None
    return load_version(bucket, model, int(pointer["version"]), cache, pointer)


def _traces(bucket: Bucket, forms: list[str], tmp: Path) -> list[str]:
    found = []
    for key in bucket.keys(""):
        local = tmp / "scan" / key
        assert bucket.get_file(key, local)
        if scan_file(local, forms).traces:
            found.append(key)
    return found


def test_promoted_versions_are_rewritten_under_the_ledger(
    served_shop: ServedShop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """forget's bucket step: every promoted version holding the shopper is rewritten, the
    ledger records it and still verifies, the served versions load (serving's own checks)
    and answer everyone else the same; an interrupted rewrite is finished by the next run."""
    settings = served_shop.copy(tmp_path)
    bucket = open_bucket(settings.serving_bucket_uri)
    search = _served(bucket, SEARCH_MODEL, tmp_path / "cache")
    assert isinstance(search.obj, SearchModel) and search.obj.profiles is not None
    both = [u for u in _active(served_shop, 40) if u in search.obj.profiles.user_row]
    gone, later, *others = both[:8]
    rec = _served(bucket, MODEL_NAME, tmp_path / "cache")
    assert isinstance(rec.obj, Recommender)
    before = _lists(rec.obj, others)
    entries = {m: len(read_ledger(bucket, m)) for m in (MODEL_NAME, SEARCH_MODEL)}
    first_manifest = layout.read_manifest(bucket, MODEL_NAME, served_shop.rec[0])
    assert first_manifest is not None
    assert _traces(bucket, [gone], tmp_path)

    done = erase_promoted(bucket, [gone], request_seq=7, requested_by="dpo")
    assert sorted(done.versions) == sorted(
        [f"{MODEL_NAME}/{served_shop.rec[0]}", f"{SEARCH_MODEL}/{served_shop.search[0]}"]
    )
    assert done.rows == 2 and not done.pending
    assert _traces(bucket, [gone], tmp_path) == []
    for model in (MODEL_NAME, SEARCH_MODEL):
        state = verify_model(bucket, model)
        assert state.ok, state.problems
        ledger_now = read_ledger(bucket, model)
        assert len(ledger_now) == entries[model] + 1
        head = ledger_now[-1].body
        assert head["action"] == "erase" and head["requested_by"] == "dpo"
        assert head["reason"] == "erasure request 7"
        manifest = layout.read_manifest(bucket, model, head["version"])
        assert manifest is not None and manifest["erasures"][0]["request"] == 7
    again = _served(bucket, MODEL_NAME, tmp_path / "cache2")
    assert isinstance(again.obj, Recommender)
    pd.testing.assert_frame_equal(_lists(again.obj, others), before)
    assert gone not in set(again.obj.ctx.user_ids.astype(str))
    assert (
        _served(bucket, SEARCH_MODEL, tmp_path / "cache2").obj.personal(gone, np.arange(3)) is None
    )  # type: ignore[union-attr]

    # nothing left to do: a second run changes nothing
    assert erase_promoted(bucket, [gone], request_seq=8, requested_by="dpo").versions == []
    assert len(read_ledger(bucket, MODEL_NAME)) == entries[MODEL_NAME] + 1

    # a rewrite prepared from what a version held before another erasure is refused
    stale = dict(first_manifest)
    with pytest.raises(ShopMLError, match="was rewritten"):
        erasure.record(
            bucket, MODEL_NAME, served_shop.rec[0], stale, {}, layout.manifest_body(
                MODEL_NAME, served_shop.rec[0], stale["files"], {}, stale["created_at"]
            ), requested_by="dpo", reason="stale",
        )  # fmt: skip

    # interrupted right after the ledger entry: refused until the next forget finishes it
    real = erasure.finish
    calls: list[int] = []

    def crash(bucket: Bucket, model: str, entry: Any) -> None:
        calls.append(entry.seq)
        if len(calls) == 1:
            raise OSError("connection lost")
        real(bucket, model, entry)

    monkeypatch.setattr(erasure, "finish", crash)
    cut = erase_promoted(bucket, [later], request_seq=9, requested_by="dpo")
    assert any("connection lost" in p for p in cut.pending), cut.pending
    state = verify_model(bucket, MODEL_NAME, versions=[])
    unfinished = [p.message for p in state.problems if p.kind == UNFINISHED]
    assert unfinished and "`shopml privacy forget` finishes it" in unfinished[0]
    monkeypatch.setattr(erasure, "finish", real)
    erase_promoted(bucket, [later], request_seq=9, requested_by="dpo")
    assert verify_model(bucket, MODEL_NAME).ok and verify_model(bucket, SEARCH_MODEL).ok
    assert len(read_ledger(bucket, MODEL_NAME)) == entries[MODEL_NAME] + 2
    assert _traces(bucket, [gone, later], tmp_path) == []
    assert bucket.keys(f"{MODEL_NAME}/erasing") == []
    final = _served(bucket, MODEL_NAME, tmp_path / "cache3")
    assert isinstance(final.obj, Recommender)
    pd.testing.assert_frame_equal(_lists(final.obj, others), before)


def test_forget_on_a_trained_promoted_shop_leaves_no_trace(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    """The whole erasure on a shop whose models were registered in MLflow, evaluated and
    promoted: after forget, audit finds the shopper in no store (MLflow's artifacts and
    database included), the promoted bundles verify and answer everyone else the same, and
    the registered challengers no longer match their verdicts (promotion refuses them)."""
    home = tmp_path / "home"
    shutil.copytree(served_shop.root / "home", home)
    shutil.copytree(served_shop.root / "bucket", tmp_path / "bucket")
    shutil.copytree(served_shop.trained.snapshot, home / "snapshots" / "shop")
    settings = replace(
        load_settings({"SHOPML_HOME": str(home)}),
        reviewers=("reviewer",),
        serving_bucket_uri=(tmp_path / "bucket").as_uri(),
    )
    bucket = open_bucket(settings.serving_bucket_uri)
    gone, *others = _active(served_shop, 6)
    rec = _served(bucket, MODEL_NAME, tmp_path / "cache")
    assert isinstance(rec.obj, Recommender)
    before = _lists(rec.obj, others)
    assert not audit([gone], settings).clean
    through_api = scan_mlflow(settings, [gone])  # how audit reads a remote MLflow
    assert through_api.traces and not through_api.not_searched
    assert any(w.startswith("models:/") for w, _ in through_api.traces)

    report = forget([gone], reason="GDPR Art. 17 #1", requested_by="dpo", settings=settings)
    assert not report.pending, report.pending
    assert report.stores["served_bundles"] >= 1 and report.stores["mlflow_bundles"] >= 3
    found = audit([gone], settings)
    assert found.clean, found.traces
    again = scan_mlflow(settings, [gone])
    assert not again.traces and not again.not_searched and again.files > 50
    # pictures and fonts of reports, and MLflow's pickle of the pyfunc wrapper (a class
    # without data): nothing else is left unread
    kinds = {Path(u).suffix for u in found.unreadable if Path(u).name != "python_model.pkl"}
    assert kinds <= {".png", ".gif", ".ico", ".otf", ".woff", ".woff2", ".ttf"}, kinds
    for model in (MODEL_NAME, SEARCH_MODEL):
        assert verify_model(bucket, model).ok
    after = _served(bucket, MODEL_NAME, tmp_path / "cache2")
    assert isinstance(after.obj, Recommender)
    pd.testing.assert_frame_equal(_lists(after.obj, others), before)
    # the next retrain reads the rewritten snapshot: its model never saw the shopper
    work = tmp_path / "retrain"
    plan = plan_training(home / "snapshots" / "shop", LIGHT)
    plan.save(work)
    prepare_features(plan, work)
    train_candidates(work_dir=work, settings=settings)
    train_ranker(work_dir=work)
    retrained = Recommender.load(work / "ranker" / "bundle")
    trained_on = set(retrained.ctx.user_ids.astype(str))
    assert gone not in trained_on and set(others) <= trained_on
    # a registered challenger that held the shopper is no longer the bundle its verdict
    # scored: promoting it is refused (it must be retrained without them)
    with pytest.raises(ShopMLError, match="not the one its verdict"):
        promote(
            version=served_shop.rec[1], settings=settings, name=MODEL_NAME,
            review=approval("run-2", MODEL_NAME),
        )  # fmt: skip
