"""Which shopper a request is about, as ShopML stores them (docs/privacy.md).

- With ``pseudonymise`` on, an incoming ``user_id`` (and ``session_id``) is mapped to its
  keyed pseudonym (the id the snapshots, models and spool hold), with the same key the
  imports use.
- A shopper on the erasure list (the serving bucket's erasure ledger, read again at every
  poll and at ``POST /admin/reload``) is answered like an anonymous one, and their events
  are dropped: :meth:`Shoppers.served` returns None for them.

With entries on the list but no privacy key to hash ids with, every shopper is answered
anonymously (fail closed) and the service logs why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from pipelines.data.privacy import SESSION_PREFIX, erasure_hash, privacy_key, pseudonym
from pipelines.errors import ConfigError
from pipelines.privacy.erasures import ErasureList
from pipelines.promotion.bucket import Bucket
from pipelines.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Shoppers:
    settings: Settings
    bucket: Bucket
    key: bytes | None = None
    erasures: ErasureList = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.erasures = ErasureList(self.bucket)
        if self.settings.pseudonymise:  # no key, no pseudonyms: refuse to start
            self.key = privacy_key(self.settings)

    def refresh(self) -> bool:
        """Read the erasure ledger's new entries; True when the list changed."""
        with self._lock:
            changed = self.erasures.refresh()
            if changed and self.key is None:
                try:
                    self.key = privacy_key(self.settings)
                except ConfigError as exc:
                    log.error("erasure list not applicable, every shopper anonymous: %s", exc)
            return changed

    def stored(self, user_id: str) -> str:
        """The id ShopML stores for ``user_id``."""
        if self.settings.pseudonymise and self.key is not None:
            return pseudonym(user_id, self.key)
        return user_id

    def session(self, session_id: str | None) -> str | None:
        """The session id ShopML stores (a keyed pseudonym too: sources and shop fronts
        often build session ids from the shopper's id)."""
        if session_id is None or not self.settings.pseudonymise or self.key is None:
            return session_id
        return pseudonym(session_id, self.key, prefix=SESSION_PREFIX)

    def served(self, user_id: str | None) -> str | None:
        """The stored id to answer and record for, or None (anonymous) when erased."""
        if user_id is None:
            return None
        stored = self.stored(user_id)
        if not self.erasures.hashes:
            return stored
        if self.key is None:
            return None  # fail closed
        return None if erasure_hash(stored, self.key) in self.erasures else stored
