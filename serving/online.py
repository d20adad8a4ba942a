"""Fresher user features for the recommender from the Feast online store
(``serving_feature_source = "online"``): the ``recommender_ranker`` service's user values
of the asking shopper, read per request (SQLite embedded, Redis in production), in place
of the promoted feature snapshot's. A shopper the store does not hold, or a store that
does not answer, keeps the snapshot's values (the failure is logged and counted)."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from pipelines.recommender.rows import STORE_USER_FEATURES
from pipelines.settings import Settings

log = logging.getLogger("shopml.serving")


class OnlineUserFeatures:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.refs = [f"user_profile:{name}" for name in STORE_USER_FEATURES]
        self.errors = 0
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:  # Feast takes seconds to import: only when asked
                from pipelines.features.store import open_store

                self._store = open_store(self.settings)
            return self._store

    def get(self, user_id: str) -> list[float] | None:
        """The shopper's values in STORE_USER_FEATURES order (NaN where missing), or None."""
        try:
            got = (
                self._open()
                .get_online_features(features=self.refs, entity_rows=[{"user_id": user_id}])
                .to_dict()
            )
        except Exception as exc:  # the online store is down: serve with the snapshot's values
            self.errors += 1
            log.warning("online store read failed (%d so far): %s", self.errors, exc)
            return None
        values = [got.get(name, [None])[0] for name in STORE_USER_FEATURES]
        if all(v is None for v in values):
            return None
        return [math.nan if v is None else float(v) for v in values]
