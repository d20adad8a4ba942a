"""Shopping sessions: when shoppers come, what they look at, what they buy.

Everything is vectorised over a chunk of sessions. A session belongs to one shopper,
starts at a time drawn with weekday and hour-of-day seasonality, and has an intent
leaf drawn from the shopper's category preferences at that moment (which drift over
the period). Each viewed item is the best of four popularity draws from that leaf by
the shopper's taste and price sensitivity. Views lead to carts and carts to one
checkout at the end of the session (the view -> add_to_cart -> purchase funnel).
Consumables are bought again about every ``cycle_days`` in later reorder visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.contract import EVENT_TYPES
from pipelines.data.generator import vocab
from pipelines.data.generator.search import Searches, run_searches
from pipelines.data.generator.world import World, affinity, sample_from_leaf
from pipelines.data.timeline import DAY

VIEW, CART, PURCHASE, SEARCH_CLICK = (
    EVENT_TYPES.index(t) for t in ("view", "add_to_cart", "purchase", "search_click")
)
CHOICES_PER_VIEW = 4
EXPLORE = 0.10  # share of sessions whose intent ignores the shopper's preferences
REORDER = 0.6  # chance that a consumable purchase is followed by a reorder visit
REORDER_CART = 0.85  # ... that the visit puts the item in the cart
REORDER_BUY = 0.85  # ... and that the cart is bought
SESSION_MARGIN = 3_600  # seconds kept free at the end of the period
RESULTS_OFFSET = 1_000  # browsing views come after the clicked search results in a session

_CYCLE = np.array([leaf.cycle_days for leaf in vocab.LEAVES])
_BASE = np.array([leaf.weight for leaf in vocab.LEAVES]) / sum(leaf.weight for leaf in vocab.LEAVES)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Sessions:
    user: np.ndarray
    start: np.ndarray  # epoch seconds (float)
    search: np.ndarray  # bool: the session starts with a search

    def __len__(self) -> int:
        return len(self.user)

    def slice(self, lo: int, hi: int) -> Sessions:
        return Sessions(self.user[lo:hi], self.start[lo:hi], self.search[lo:hi])


def _seasonal_times(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Times in [lo, hi) with weekday weights (by rejection) and an hour-of-day profile."""
    wk = np.array(vocab.WEEKDAY_WEIGHTS)
    t = lo + rng.random(len(lo)) * (hi - lo)
    todo = np.arange(len(lo))
    for _ in range(64):
        weekday = ((t[todo] // DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        rejected = todo[rng.random(len(todo)) >= wk[weekday] / wk.max()]
        if not len(rejected):
            break
        t[rejected] = lo[rejected] + rng.random(len(rejected)) * (hi[rejected] - lo[rejected])
        todo = rejected
    hours = np.array(vocab.HOUR_WEIGHTS)
    hour = np.searchsorted(np.cumsum(hours) / hours.sum(), rng.random(len(lo)), side="right")
    t = (t // DAY) * DAY + hour * 3600.0 + rng.random(len(lo)) * 3600.0
    return np.clip(t, lo, hi - 1.0)


def plan_sessions(world: World, n: int, rng: np.random.Generator) -> Sessions:
    """``n`` sessions: shoppers by activity x days they are around, seasonal start times."""
    cfg = world.cfg
    lo_user = np.maximum(world.user_signup, cfg.t0).astype(np.float64)
    weight = world.user_activity * np.maximum(cfg.t1 - lo_user, 3600.0)
    user = rng.choice(world.n_users, size=n, p=weight / weight.sum())
    lo = lo_user[user]
    # Sessions start at least an hour before the period ends, so they end inside it.
    hi = np.full(n, float(cfg.t1 - SESSION_MARGIN))
    start = _seasonal_times(np.minimum(lo, hi - 1.0), hi, rng)
    return Sessions(user=user, start=start, search=rng.random(n) < cfg.search_share)


def _intent(
    world: World, users: np.ndarray, times: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    cfg = world.cfg
    alpha = np.clip((times - cfg.t0) / (cfg.t1 - cfg.t0), 0.0, 1.0)[:, None].astype(np.float32)
    start = world.pref_start[users]
    logits = start + alpha * (world.pref_end[users] - start)
    gumbel = -np.log(
        -np.log(rng.random(logits.shape, dtype=np.float32) + np.float32(1e-12)) + np.float32(1e-12)
    )
    leaf = np.argmax(logits + gumbel, axis=1)
    explore = rng.random(len(users)) < EXPLORE
    leaf[explore] = rng.choice(len(_BASE), size=int(explore.sum()), p=_BASE)
    return leaf


def choose_items(
    world: World, users: np.ndarray, leaves: np.ndarray, times: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Per row, the best of a few popularity draws by taste, price and chance (a logit choice)."""
    cands = sample_from_leaf(world, leaves, times, rng, CHOICES_PER_VIEW)
    util = (
        affinity(world, users, cands)
        - 0.5 * world.user_sensitivity[users][:, None] * world.item_price_z[cands]
        - np.log(-np.log(rng.random(cands.shape) + 1e-12) + 1e-12)
    )
    return cands[np.arange(len(users)), np.argmax(util, axis=1)]


class DurableMemory:
    """The (shopper, item) pairs of durable goods already bought: nobody buys the same sofa twice.

    A later purchase of such a pair becomes an abandoned cart. Consumables are exempt.
    """

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.keys = np.zeros(0, dtype=np.int64)

    def first_time(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        ok = first & ~np.isin(keys, self.keys)
        self.keys = np.union1d(self.keys, keys[ok])
        return ok


@dataclass
class Chunk:
    """Events of a chunk of sessions, grouped by session in ``session_rank`` order, each
    session in time order; session numbers from the planned count on are reorders."""

    session: np.ndarray
    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    ts: np.ndarray
    query: np.ndarray  # local query number, -1 for none
    quantity: np.ndarray  # 0 = not applicable
    value: np.ndarray  # NaN = not applicable
    n_sessions: int
    session_rank: np.ndarray  # position of each session in the event order
    query_session: np.ndarray
    query_user: np.ndarray
    query_ts: np.ndarray
    searches: Searches


def _segment_cumsum(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each new value of the (sorted) ``segment`` array."""
    cs = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
    base = np.r_[0.0, cs][starts]
    return cs - np.repeat(base, np.diff(np.r_[starts, len(values)]))


def _reorders(
    world: World,
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    qty: np.ndarray,
    rng: np.random.Generator,
    first_session: int,
) -> list[np.ndarray]:
    """Reorder sessions after consumable purchases: view, maybe add_to_cart, maybe purchase.

    Each purchase is followed with probability ``REORDER`` by a visit about one cycle
    later; the visit carts with probability ``REORDER_CART`` and buys with probability
    ``REORDER_BUY``, and only a purchase schedules the next visit.
    """
    cycle = _CYCLE[world.item_leaf[item]]
    keep = cycle > 0
    user, item, ts, qty, cycle = user[keep], item[keep], ts[keep], qty[keep], cycle[keep]
    parts: list[list[np.ndarray]] = []
    session = first_session
    while len(user):
        nxt = ts + cycle * DAY * rng.lognormal(0.0, 0.25, len(ts))
        go = (rng.random(len(ts)) < REORDER) & (nxt < world.cfg.t1 - SESSION_MARGIN)
        user, item, qty, cycle, ts = user[go], item[go], qty[go], cycle[go], nxt[go]
        k = len(user)
        if not k:
            break
        sess = session + np.arange(k)
        session += k
        carted = rng.random(k) < REORDER_CART
        bought = carted & (rng.random(k) < REORDER_BUY)
        t_cart = ts + 5 + rng.exponential(20.0, k)
        t_buy = t_cart + 10 + rng.exponential(60.0, k)
        price = world.item_price[item]
        c, b = np.flatnonzero(carted), np.flatnonzero(bought)
        parts.append([
            np.concatenate([sess, sess[c], sess[b]]),
            np.concatenate([user, user[c], user[b]]),
            np.concatenate([item, item[c], item[b]]),
            np.concatenate([np.full(k, VIEW, np.int8), np.full(len(c), CART, np.int8), np.full(len(b), PURCHASE, np.int8)]),
            np.concatenate([ts, t_cart[c], t_buy[b]]),
            np.concatenate([np.zeros(k, np.int32), qty[c], qty[b]]),
            np.concatenate([np.full(k, np.nan), (price * qty)[c], (price * qty)[b]]),
        ])  # fmt: skip
        user, item, qty, cycle, ts = user[b], item[b], qty[b], cycle[b], t_buy[b]
    if not parts:
        return [
            np.zeros(0, dt)
            for dt in (np.int64, np.int64, np.int64, np.int8, np.float64, np.int32, np.float64)
        ]
    return [np.concatenate([p[i] for p in parts]) for i in range(7)]


def simulate_chunk(
    world: World, sessions: Sessions, rng: np.random.Generator, memory: DurableMemory
) -> Chunk:
    n = len(sessions)
    users, starts = sessions.user, sessions.start
    leaf = _intent(world, users, starts, rng)

    # Searches: the wanted item, the query, what the engine showed, what was clicked.
    q_sess = np.flatnonzero(sessions.search)
    targets = choose_items(world, users[q_sess], leaf[q_sess], starts[q_sess], rng)
    searches = run_searches(world, users[q_sess], targets, starts[q_sess], rng)
    q_local, pos = np.nonzero(searches.clicked)

    # Browsing views: at least one in a browse session, maybe none after a search.
    n_views = np.where(sessions.search, rng.geometric(0.5, n) - 1, rng.geometric(0.35, n))
    v_sess = np.repeat(np.arange(n), n_views)
    v_item = choose_items(world, users[v_sess], leaf[v_sess], starts[v_sess], rng)

    sess = np.concatenate([q_sess[q_local], v_sess])
    item = np.concatenate([searches.shown[q_local, pos], v_item])
    kind = np.concatenate(
        [np.full(len(q_local), SEARCH_CLICK, np.int8), np.full(len(v_sess), VIEW, np.int8)]
    )
    order_key = np.concatenate([pos, RESULTS_OFFSET + np.arange(len(v_sess))])
    query = np.concatenate([q_local, np.full(len(v_sess), -1)])
    o = np.lexsort((order_key, sess))
    sess, item, kind, query = sess[o], item[o], kind[o], query[o]
    user = users[sess]
    ts = starts[sess] + _segment_cumsum(rng.exponential(40.0, len(sess)) + 2.0, sess)

    # Funnel: view -> add_to_cart (per item) -> one checkout at the end of the session.
    aff = affinity(world, user, item)
    price_pull = world.user_sensitivity[user] * world.item_price_z[item]
    carted = rng.random(len(item)) < _sigmoid(-3.0 + 1.0 * aff - 0.5 * price_pull)
    c_idx = np.flatnonzero(carted)
    c_ts = ts[c_idx] + 3 + rng.exponential(25.0, len(c_idx))
    bought = rng.random(len(c_idx)) < _sigmoid(-0.8 + 0.7 * aff[c_idx] - 0.4 * price_pull[c_idx])
    consumable = _CYCLE[world.item_leaf[item[c_idx]]] > 0
    c_qty = (1 + np.where(consumable, rng.poisson(0.4, len(c_idx)), 0)).astype(np.int32)
    last = np.full(n, -np.inf)
    np.maximum.at(last, sess, ts)
    np.maximum.at(last, sess[c_idx], c_ts)
    durable = ~consumable[bought]
    keep = np.ones(int(bought.sum()), dtype=bool)
    keep[durable] = memory.first_time(user[c_idx[bought][durable]], item[c_idx[bought][durable]])
    bought[np.flatnonzero(bought)[~keep]] = False
    b_idx = c_idx[bought]
    b_ts = last[sess[b_idx]] + 30 + rng.exponential(60.0, len(b_idx))
    b_qty = c_qty[bought]
    price = world.item_price[item]

    r = _reorders(world, user[b_idx], item[b_idx], b_ts, b_qty, rng, first_session=n)
    n_reorder_sessions = int(r[0].max() - n + 1) if len(r[0]) else 0

    cols = [
        np.concatenate([sess, sess[c_idx], sess[b_idx], r[0]]),
        np.concatenate([user, user[c_idx], user[b_idx], r[1]]),
        np.concatenate([item, item[c_idx], item[b_idx], r[2]]),
        np.concatenate(
            [kind, np.full(len(c_idx), CART, np.int8), np.full(len(b_idx), PURCHASE, np.int8), r[3]]
        ),
        np.concatenate([ts, c_ts, b_ts, r[4]]),
        np.concatenate([query, query[c_idx], query[b_idx], np.full(len(r[0]), -1)]),
        np.concatenate([np.zeros(len(sess), np.int32), c_qty, b_qty, r[5]]),
        np.concatenate(
            [np.full(len(sess), np.nan), price[c_idx] * c_qty, price[b_idx] * b_qty, r[6]]
        ),
    ]
    # Events grouped by session in a random session order, so that cutting a chunk at the
    # requested event count drops random sessions (reorders included), not the last ones.
    rank = rng.permutation(n + n_reorder_sessions)
    o = np.lexsort((cols[4], rank[cols[0]]))
    s, u, it, et, t, qu, qt, val = (c[o] for c in cols)
    return Chunk(
        session=s, user=u, item=it, etype=et, ts=t, query=qu, quantity=qt, value=val,
        n_sessions=n + n_reorder_sessions, session_rank=rank, query_session=q_sess,
        query_user=users[q_sess], query_ts=starts[q_sess], searches=searches,
    )  # fmt: skip
