"""Sessions and baskets: the item x item relation of what is touched together, and
keeping each row's latest entries (see :mod:`pipelines.candidates.cooccur`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.candidates.config import CandidateConfig
from pipelines.data.timeline import Timeline, session_codes


def session_cooccurrence(
    tl: Timeline, selected: np.ndarray | slice, cfg: CandidateConfig
) -> sp.csr_matrix:
    """The normalised, pruned item x item relation of the sessions in ``selected``."""
    user, item, ts = tl.user[selected], tl.item[selected], tl.ts[selected]
    session = session_codes(tl, selected)
    n_items = tl.n_items
    pairs = pd.DataFrame({"s": session, "i": item, "u": user, "t": ts}).drop_duplicates(["s", "i"])
    if pairs.empty:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    s_codes, _ = pd.factorize(pairs["s"])
    basket = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (s_codes, pairs["i"].to_numpy())),
        shape=(int(s_codes.max()) + 1, n_items),
    )
    counts = (basket.T @ basket).tocsr()
    # next-session transitions: each shopper's sessions in time order, s_k -> s_k+1
    first = pairs.groupby(s_codes).agg(u=("u", "first"), t=("t", "min")).reset_index(names="s")
    first = first.sort_values(["u", "t"], kind="stable")
    same_user = first["u"].to_numpy()[1:] == first["u"].to_numpy()[:-1]
    src = first["s"].to_numpy()[:-1][same_user]
    dst = first["s"].to_numpy()[1:][same_user]
    if len(src) and cfg.cooccur_next_weight > 0:
        transitions = basket[src].T @ basket[dst]
        counts = counts + cfg.cooccur_next_weight * (transitions + transitions.T) / 2
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.setdiag(0)
    counts.eliminate_zeros()
    held = np.asarray(basket.sum(axis=0)).ravel()
    norm = 1.0 / np.sqrt(np.maximum(held, 1.0))
    relation = (sp.diags(norm) @ counts @ sp.diags(norm)).tocsr().astype(np.float32)
    return keep_latest(relation, relation, cfg.cooccur_neighbours)  # the strongest per item


def keep_latest(rows: sp.csr_matrix, times: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep, per row, the ``keep`` entries with the latest ``times`` (same sparsity)."""
    lengths = np.diff(rows.indptr)
    if lengths.max(initial=0) <= keep:
        return rows
    row_of = np.repeat(np.arange(rows.shape[0]), lengths)
    order = np.lexsort((-times.data, row_of))
    rank = np.arange(len(order)) - rows.indptr[row_of[order]]
    chosen = np.sort(order[rank < keep])
    out = sp.csr_matrix(
        (rows.data[chosen], rows.indices[chosen], np.r_[0, np.cumsum(np.minimum(lengths, keep))]),
        shape=rows.shape,
    )
    return out
