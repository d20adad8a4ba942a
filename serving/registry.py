"""The served models behind one swap-able reference, and the poller that swaps them.

Every ``poll_seconds`` (and on ``POST /admin/reload``) the registry reads each model's
``current.json``. A pointer that names another version than the one served is fetched,
verified and loaded beside the served one (:mod:`serving.versions`); only then the
reference is replaced, in one assignment. A request takes the reference once at its start,
so requests in flight finish on the version they began with. A version that fails is
refused: the old one keeps serving, and ``/readyz``, the log and the
``shopml_swaps_refused_total`` metric say why; it is tried again only when the pointer
moves. A rollback is a pointer move like any other, served within one poll.
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import sha256_json
from pipelines.promotion import layout
from pipelines.promotion.bucket import Bucket
from serving.metrics import Metrics
from serving.versions import MODELS, RefusedError, ServedVersion, load_version

log = logging.getLogger("shopml.serving")
EXTRA_VERSIONS = 2  # other promoted versions kept loaded for the preview's second column


@dataclass(frozen=True)
class Refusal:
    model: str
    version: int
    reason: str
    at: str
    manifest_sha256: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ServedModels:
    def __init__(
        self, bucket: Bucket, cache: Path, metrics: Metrics, *, known_shoppers: int = 0
    ) -> None:
        self.bucket = bucket
        self.known_shoppers = known_shoppers  # precomputed lists per served recommender
        self.cache = cache
        self.metrics = metrics
        self._served: dict[str, ServedVersion] = {}  # replaced whole, never mutated
        self.refused: dict[str, Refusal] = {}
        self.errors: dict[str, str] = {}  # a pointer that cannot be read, per model
        self.promoted: dict[str, bool] = {m: False for m in MODELS}
        self.checked_at: str | None = None
        self._check_lock = threading.Lock()
        self._extra_lock = threading.Lock()
        self._extra: OrderedDict[tuple[str, int], ServedVersion] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # read at every check too, before the models (the erasure list: serving/shoppers.py)
        self.also: list[Callable[[], object]] = []

    # -- reading ------------------------------------------------------------------
    def current(self, model: str) -> ServedVersion | None:
        return self._served.get(model)

    def snapshot(self) -> dict[str, ServedVersion]:
        """The served versions, all from one moment (one reference read)."""
        return self._served

    def ready(self) -> bool:
        """Serving every model that has been promoted, and at least one."""
        served = self._served
        promoted = [m for m, p in self.promoted.items() if p]
        return bool(promoted) and all(m in served for m in promoted)

    def status(self) -> dict[str, Any]:
        served = self._served
        out: dict[str, Any] = {"ready": self.ready(), "checked_at": self.checked_at, "models": {}}
        for m in MODELS:
            entry: dict[str, Any] = {"promoted": self.promoted[m]}
            if m in served:
                entry["served"] = served[m].describe()
            if m in self.refused:
                r = self.refused[m]
                entry["refused"] = {"version": r.version, "reason": r.reason, "at": r.at}
            if m in self.errors:
                entry["error"] = self.errors[m]
            out["models"][m] = entry
        return out

    # -- swapping -----------------------------------------------------------------
    def check(self) -> dict[str, str]:
        """Read every pointer and swap in what moved; returns {model: what happened}."""
        with self._check_lock:
            for fn in self.also:
                try:
                    fn()
                except Exception:  # one store failing must not stop the models' check
                    log.exception("check of %s failed", getattr(fn, "__name__", fn))
            return {m: self._check_model(m) for m in MODELS}

    def _check_model(self, model: str) -> str:
        try:
            pointer = layout.read_pointer(self.bucket, model)
        except Exception as exc:  # unreadable bucket or pointer: keep serving what we have
            self.errors[model] = f"cannot read {self.bucket.url(layout.pointer_key(model))}: {exc}"
            log.warning("%s", self.errors[model])
            return "error"
        finally:
            self.checked_at = _now()
        self.errors.pop(model, None)
        if pointer is None:
            self.promoted[model] = False
            return "none promoted"
        self.promoted[model] = True
        version = int(pointer["version"])
        digest = str(pointer["manifest_sha256"])
        served = self._served.get(model)
        if (
            served is not None
            and served.version == version
            and sha256_json(served.manifest) == digest
        ):
            self.refused.pop(model, None)
            return "unchanged"
        refused = self.refused.get(model)
        if refused is not None and (refused.version, refused.manifest_sha256) == (version, digest):
            return "refused before"
        try:
            loaded = load_version(
                self.bucket, model, version, self.cache, pointer,
                known_shoppers=self.known_shoppers,
            )  # fmt: skip
        except RefusedError as exc:
            self._refuse(model, version, str(exc), digest)
            return "refused"
        except ShopMLError as exc:
            self._refuse(model, version, str(exc), digest)
            return "refused"
        old = served
        # the loaded model's objects never change: out of the collector's way, so a full
        # collection does not walk them in the middle of requests
        gc.collect()
        gc.freeze()
        self._served = {**self._served, model: loaded}  # the swap: one assignment
        self.refused.pop(model, None)
        self.metrics.swapped(model, version)
        log.info(
            "serving %s version %d (was %s; loaded in %.1f s)",
            model, version, "none" if old is None else old.version, loaded.load_seconds,
        )  # fmt: skip
        if old is not None:
            # requests in flight hold the old object; its files may go (mapped files stay
            # readable until unmapped)
            shutil.rmtree(old.folder, ignore_errors=True)
        return "swapped"

    def _refuse(self, model: str, version: int, reason: str, digest: str) -> None:
        self.refused[model] = Refusal(model, version, reason, _now(), digest)
        self.metrics.refused(model)
        served = self._served.get(model)
        log.error(
            "refused %s version %d: %s; %s",
            model, version, reason,
            "nothing served" if served is None else f"version {served.version} keeps serving",
        )  # fmt: skip

    # -- other versions (the preview's comparison column) ----------------------------
    def version(self, model: str, version: int) -> ServedVersion:
        """A promoted version: the served one, or another loaded (verified) on demand."""
        served = self._served.get(model)
        if served is not None and served.version == version:
            return served
        key = (model, version)
        with self._extra_lock:
            if key in self._extra:
                cached = self._extra[key]
                now = layout.read_manifest(self.bucket, model, version)
                if now is not None and sha256_json(now) == sha256_json(cached.manifest):
                    self._extra.move_to_end(key)
                    return cached
                # rewritten since (an erasure): the old object must not answer again
                del self._extra[key]
                shutil.rmtree(cached.folder, ignore_errors=True)
            loaded = load_version(self.bucket, model, version, self.cache / "preview")
            self._extra[key] = loaded
            while len(self._extra) > EXTRA_VERSIONS:
                _, dropped = self._extra.popitem(last=False)
                shutil.rmtree(dropped.folder, ignore_errors=True)
            return loaded

    # -- the poller ---------------------------------------------------------------
    def start(self, poll_seconds: float) -> None:
        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                try:
                    self.check()
                except Exception:  # the poller must outlive any one failure
                    log.exception("model check failed")

        self._thread = threading.Thread(target=loop, name="shopml-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
