"""Content-based candidates: a user's profile vector against item content vectors.

Item vectors come from the item_content features (text embedding of title and
description, and the image embedding when the catalog has one; see
``SideInfo.content_vectors``: the dot product of two items is the mean of their text and
image cosines). A user's profile is the confidence-weighted mean of the vectors of their
``content_history`` most recently touched items; an item's score is its dot product with
the profile, i.e. its mean content similarity to what the user recently engaged with.
Nothing is learned from interactions, so new items score as soon as their content exists.
"""

from __future__ import annotations

import numpy as np

from pipelines.candidates.base import Context, Generator, UserBatch


class ContentGenerator(Generator):
    name = "content"

    def _fit(self, ctx: Context) -> None:
        del ctx  # content vectors come from the side information, nothing to learn

    def profiles(self, batch: UserBatch) -> np.ndarray:
        return batch.remember(("content", id(self)), lambda: self._profiles(batch))

    def _profiles(self, batch: UserBatch) -> np.ndarray:
        content = self.ctx.side.content
        if content is None:
            return np.zeros((len(batch), 1), dtype=np.float32)
        rows = batch.recent(self.ctx.history, self.cfg.content_history)
        prof = np.asarray(rows @ content, dtype=np.float32)
        norms = np.linalg.norm(prof, axis=1, keepdims=True)
        return np.where(norms > 0, prof / np.maximum(norms, 1e-12), 0.0).astype(np.float32)

    def answers(self, batch: UserBatch) -> np.ndarray:
        """Users whose recent items have content vectors (a zero profile says nothing)."""
        if self.ctx.side.content is None:
            return np.zeros(len(batch), dtype=bool)
        return np.linalg.norm(self.profiles(batch), axis=1) > 0

    def query_vectors(self, batch: UserBatch) -> np.ndarray | None:
        return None if self.ctx.side.content is None else self.profiles(batch)

    def item_vectors(self) -> np.ndarray | None:
        content = self.ctx.side.content
        return None if content is None else np.asarray(content, dtype=np.float32)

    def scores(self, batch: UserBatch) -> np.ndarray:
        content = self.ctx.side.content
        if content is None:
            return np.zeros((len(batch), len(self.ctx.item_ids)), dtype=np.float32)
        return self.profiles(batch) @ content.T
