"""One promoted version, fetched from the serving bucket, verified, and loaded.

A version is served only from a private copy whose every byte was checked: each file the
manifest lists is read once from the bucket, its SHA-256 compared with the manifest's,
and written into a fresh folder of the local cache; the bundle is loaded from that copy,
so a file changed in the bucket after the check cannot reach the process. The version is
refused — with a reason naming the key — when a listed file is missing or altered, when
the bucket holds a file the manifest does not list, when a manifest path leaves the
version folder, when the manifest is not the one the pointer names, or when the bundle
does not load.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import ShopMLError
from pipelines.io import sha256_json
from pipelines.promotion import layout, ledger
from pipelines.promotion.bucket import Bucket
from pipelines.ranking.compiled import CompileError, compile_booster
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.rows import STORE_ITEM_FEATURES, STORE_USER_FEATURES, StoreFeatures
from pipelines.search.model import SearchModel
from serving.known import KnownLists
from serving.known import compute as compute_known

log = logging.getLogger("shopml.serving")

RECOMMENDER = "shopml-recommender"
SEARCH = "shopml-search"
MODELS = (RECOMMENDER, SEARCH)


class RefusedError(ShopMLError):
    """A version that must not be served; the message says why."""


@dataclass
class Catalog:
    """What an answer shows of an item: title, category, price, image URL, by item id."""

    row: dict[str, int]
    title: np.ndarray
    category: np.ndarray
    price: np.ndarray
    image_url: np.ndarray | None = None

    def describe(self, item_id: str) -> dict[str, Any]:
        i = self.row.get(item_id)
        if i is None:
            return {"item_id": item_id, "title": None, "category": None, "price": None}
        out = {
            "item_id": item_id,
            "title": _text(self.title[i]),
            "category": _text(self.category[i]),
            "price": None if not np.isfinite(self.price[i]) else round(float(self.price[i]), 2),
        }
        url = None if self.image_url is None else _text(self.image_url[i])
        if url is not None and url.lower().startswith(("https://", "http://")):
            out["image_url"] = url  # never a javascript: or data: URL into a page
        return out


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


@dataclass
class ServedVersion:
    """A loaded, verified version of one model."""

    model: str
    version: int
    manifest: dict[str, Any]
    obj: Recommender | SearchModel
    catalog: Catalog
    folder: Path
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    load_seconds: float = 0.0
    known: KnownLists | None = None  # known shoppers' plain lists (recommender only)

    @property
    def snapshot_id(self) -> str | None:
        value = self.manifest.get("snapshot_id")
        return value if isinstance(value, str) else None

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "snapshot_id": self.snapshot_id,
            "loaded_at": self.loaded_at,
            "manifest_sha256": sha256_json(self.manifest),
            "promoted_at": self.manifest.get("created_at"),
            "precomputed_shoppers": 0 if self.known is None else self.known.shoppers,
        }


def _safe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def fetch(
    bucket: Bucket, model: str, version: int, cache: Path, pointer: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Path]:
    """Every file of ``version``, verified, copied into a new folder under ``cache``;
    returns (manifest, folder). ``pointer``: the ``current.json`` that names the version,
    whose manifest digest must match."""
    try:
        manifest = layout.read_manifest(bucket, model, version)
    except layout.LayoutError as exc:
        raise RefusedError(str(exc)) from exc
    if manifest is None:
        key = layout.version_key(model, version, layout.MANIFEST)
        raise RefusedError(f"{bucket.url(key)}: missing (an unfinished or removed version)")
    if pointer is not None and pointer.get("manifest_sha256") != sha256_json(manifest):
        raise RefusedError(
            f"{bucket.url(layout.pointer_key(model))}: names another manifest than the one "
            f"version {version} holds (the manifest was rewritten)"
        )
    files = manifest["files"]
    bad = [rel for rel in files if not isinstance(rel, str) or not _safe(rel)]
    if bad:
        raise RefusedError(
            f"{model} version {version}: manifest path {bad[0]!r} leaves the version"
        )
    folder = cache / model / f"{version}-{time.time_ns()}"
    try:
        layout.copy_version(bucket, model, version, manifest, folder, RefusedError)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest, folder


def load_version(
    bucket: Bucket,
    model: str,
    version: int,
    cache: Path,
    pointer: dict[str, Any] | None = None,
    *,
    known_shoppers: int = 0,
) -> ServedVersion:
    """:func:`fetch` then load; :class:`RefusedError` with the reason when anything fails.
    ``known_shoppers``: precompute the plain lists of that many known shoppers (the
    recommender, with the promoted feature snapshot; :mod:`serving.known`)."""
    started = time.perf_counter()
    manifest, folder = fetch(bucket, model, version, cache, pointer)
    try:
        obj, catalog = _load(model, folder)
    except RefusedError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as exc:  # a bundle that does not load is refused, never served
        shutil.rmtree(folder, ignore_errors=True)
        raise RefusedError(f"{model} version {version} does not load: {exc}") from exc
    _compile(obj, model, version, folder / "compiled")
    known = None
    if isinstance(obj, Recommender) and known_shoppers > 0:
        try:
            known = compute_known(obj, known_shoppers)
        except Exception as exc:  # a version that cannot answer its own shoppers is refused
            shutil.rmtree(folder, ignore_errors=True)
            raise RefusedError(f"{model} version {version} does not answer: {exc}") from exc
    return ServedVersion(
        model, version, manifest, obj, catalog, folder,
        load_seconds=time.perf_counter() - started, known=known,
    )  # fmt: skip


def _compile(obj: Recommender | SearchModel, model: str, version: int, folder: Path) -> None:
    """Compile the version's ranker (same scores, faster); one that does not compile or
    agree is served by LightGBM, and the log says why."""
    if obj.booster is None:
        return
    try:
        seconds = compile_booster(obj.booster, folder)
    except CompileError as exc:
        log.warning("%s version %s: served by LightGBM: %s", model, version, exc)
        return
    log.info("%s version %s: ranker compiled in %.1f s", model, version, seconds)


def _load(model: str, folder: Path) -> tuple[Recommender | SearchModel, Catalog]:
    bundle = folder / layout.BUNDLE
    if model == SEARCH:
        search = SearchModel.load(bundle)
        items = search.index.items
        return search, Catalog(
            {str(i): n for n, i in enumerate(search.index.item_ids)},
            items["title"].to_numpy(dtype=object),
            items["category"].to_numpy(dtype=object),
            items["price"].to_numpy(dtype=np.float64),
            items["image_url"].to_numpy(dtype=object) if "image_url" in items.columns else None,
        )
    rec = Recommender.load(bundle)
    _promoted_features(rec, folder / layout.FEATURES)
    return rec, Catalog(
        {str(i): n for n, i in enumerate(rec.ctx.item_ids)},
        np.asarray(rec.items.titles, dtype=object),
        rec.items.categories[rec.items.category],
        np.asarray(rec.items.price, dtype=np.float64),
        rec.items.image_urls if len(rec.items.image_urls) else None,
    )


def _promoted_features(rec: Recommender, folder: Path) -> None:
    """Serve with the promoted feature snapshot (``features/``): it must list the bundle's
    users and items in the bundle's order, with the ranker's columns."""
    users_file, items_file = folder / "users.parquet", folder / "items.parquet"
    if not users_file.is_file() or not items_file.is_file():
        raise RefusedError(f"{folder}: the promoted feature snapshot is missing")
    users, items = pd.read_parquet(users_file), pd.read_parquet(items_file)
    if not np.array_equal(users["user_id"].astype(str), rec.ctx.user_ids.astype(str)) or not (
        np.array_equal(items["item_id"].astype(str), rec.ctx.item_ids.astype(str))
    ):
        raise RefusedError(
            f"{folder}: the feature snapshot lists other users or items than the bundle"
        )
    if rec.store is None:
        return
    missing = [
        c for c in (*STORE_USER_FEATURES, *STORE_ITEM_FEATURES) if c not in users and c not in items
    ]
    if missing:
        raise RefusedError(f"{folder}: the feature snapshot lacks {', '.join(missing)}")
    rec.store = StoreFeatures(
        users=users[list(STORE_USER_FEATURES)].to_numpy(dtype=np.float32),
        items=items[list(STORE_ITEM_FEATURES)].to_numpy(dtype=np.float32),
    )


def promoted_versions(bucket: Bucket, model: str) -> list[int]:
    """Every version the (verified) ledger promoted for ``model``, oldest first: the
    preview's comparison column offers them. Raises :class:`ShopMLError` naming the key
    when the ledger is damaged."""
    return sorted(
        {e.version for e in ledger.read_ledger(bucket, model) if e.body["action"] == "promote"}
    )
