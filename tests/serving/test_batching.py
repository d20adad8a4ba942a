"""Micro-batching: answers in a batch are each request's own, as if asked alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.promotion import layout
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import MODEL_NAME
from serving.batcher import Batcher
from serving.recommend import Ask, recommend_batch
from tests.served import ServedShop


def test_the_batcher_answers_each_caller_with_its_own_result() -> None:
    seen: list[int] = []

    def answer(items: list[int]) -> list[int | BaseException]:
        seen.append(len(items))
        return [ValueError(f"odd {i}") if i % 7 == 0 else i * i for i in items]

    b: Batcher[int, int] = Batcher(answer)  # type: ignore[arg-type]
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            results[i] = b(i)
        except ValueError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    assert results == {i: (f"odd {i}" if i % 7 == 0 else i * i) for i in range(1, 200)}
    assert sum(seen) == 199


@pytest.mark.slow
def test_a_batch_answers_like_single_calls(served_shop: ServedShop) -> None:
    root = Path(served_shop.settings.serving_bucket_uri.removeprefix("file://"))
    rec = Recommender.load(root / layout.version_key(MODEL_NAME, served_shop.rec[0], layout.BUNDLE))
    users = [str(u) for u in rec.ctx.user_ids[:12]]
    item = str(rec.ctx.item_ids[3])
    category = str(rec.items.categories[rec.items.category[3]]).split("/")[0]
    requests = [RecommendRequest([u], k=5) for u in users]
    requests += [
        RecommendRequest([users[0]], k=5),  # the same shopper twice in one batch
        RecommendRequest([users[1]], k=8, explain=True),
        RecommendRequest([users[2]], k=5, exclude=[[item]]),
        RecommendRequest([users[3]], k=5, category=category),
        RecommendRequest(["new-1"], k=5, age=[30.0], gender=["F"], recent_items=[[item]]),
        RecommendRequest(["new-2"], k=5),
    ]
    batched = recommend_batch([Ask(rec, r) for r in requests])
    for req, got in zip(requests, batched, strict=True):
        assert isinstance(got, pd.DataFrame)
        alone = rec.recommend(req)
        assert list(got["item_id"]) == list(alone["item_id"]), req
        np.testing.assert_allclose(got["score"], alone["score"], rtol=1e-6)
        if req.explain:
            assert list(got["reasons"]) == list(alone["reasons"])
    assert item not in set(batched[14]["item_id"])  # type: ignore[index]
    assert all(c.startswith(category) for c in batched[15]["category"])  # type: ignore[index]
