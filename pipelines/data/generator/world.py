"""The hidden world behind a generated shop: items, users and their true tastes.

:func:`build_world` draws everything the behaviour simulation needs from the seed.
The tables a snapshot shows (:func:`users_table`, :func:`items_table`) are a view of
this world with some demographics hidden, as in a real shop; the latent tastes stay
hidden and are what the models have to learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from pipelines.data.contract import TS, schema
from pipelines.data.generator import vocab
from pipelines.data.generator.ids import format_ids
from pipelines.data.timeline import DAY
from pipelines.errors import ShopMLError, require_all

LATENT_DIM = len(vocab.STYLE_WORDS)


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of ``shopml data generate`` (see docs/data-generator.md)."""

    users: int = 5_000
    items: int = 2_000
    events: int = 250_000
    seed: int = 42
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    days: int = 90
    image_dim: int = 16
    new_user_share: float = 0.30
    new_item_share: float = 0.20
    search_share: float = 0.15
    drift: float = 1.0
    judged_queries: int = 500
    chunk_sessions: int = 100_000

    def __post_init__(self) -> None:
        min_items = 3 * len(vocab.LEAVES)
        checks = [
            (self.users >= 1, "--users must be at least 1"),
            (
                self.items >= min_items,
                f"--items must be at least {min_items} (3 per leaf category)",
            ),
            (self.events >= 1, "--events must be at least 1"),
            (self.days >= 1, "--days must be at least 1"),
            (self.image_dim >= 0, "--image-dim must be 0 (no images) or more"),
            (0 <= self.new_user_share < 1, "--new-user-share must be in [0, 1)"),
            (0 <= self.new_item_share < 1, "--new-item-share must be in [0, 1)"),
            (0 <= self.search_share <= 1, "--search-share must be in [0, 1]"),
            (self.drift >= 0, "--drift must be >= 0"),
            (self.judged_queries >= 0, "--judged-queries must be >= 0"),
            (self.chunk_sessions >= 1000, "chunk_sessions must be >= 1000"),
            (self.start.tzinfo is not None, "start must be timezone-aware"),
            # Histories reach two years back; the sampling keys hold epoch seconds up to 2514.
            (
                self.start.year >= 1975 and self.start.year + self.days / 365 <= 2200,
                "--start must lie between 1975 and 2200",
            ),
        ]
        require_all(checks, error=ShopMLError)

    @property
    def t0(self) -> int:
        """Start of the simulated period, epoch seconds."""
        return int(self.start.timestamp())

    @property
    def t1(self) -> int:
        """End of the simulated period (exclusive), epoch seconds."""
        return int((self.start + timedelta(days=self.days)).timestamp())


def rng_for(cfg: GeneratorConfig, *stream: int) -> np.random.Generator:
    """An independent, reproducible random stream for one part of the simulation."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, *stream])))


@dataclass
class World:
    cfg: GeneratorConfig
    # --- catalog (index = item number)
    item_leaf: np.ndarray
    item_brand: np.ndarray  # index into brands
    item_noun: np.ndarray  # index into nouns
    item_latent: np.ndarray  # (items, LATENT_DIM)
    item_style: np.ndarray  # dominant latent dimension
    item_style_sign: np.ndarray  # +1 / -1: which word of the pair
    item_color: np.ndarray
    item_price: np.ndarray
    item_price_z: np.ndarray  # log price vs the leaf median, in leaf sigmas
    item_weight: np.ndarray  # Zipf-like base popularity
    item_created: np.ndarray  # epoch seconds
    item_image: np.ndarray | None
    brands: list[str]
    nouns: list[str]
    noun_leaf: np.ndarray
    # --- shoppers (index = user number)
    user_age: np.ndarray  # true age (the table hides some)
    user_female: np.ndarray  # +1 F, -1 M
    user_region: np.ndarray
    user_signup: np.ndarray  # epoch seconds
    user_activity: np.ndarray
    user_sensitivity: np.ndarray  # price sensitivity > 0
    user_latent: np.ndarray  # (users, LATENT_DIM)
    pref_start: np.ndarray  # (users, leaves) category logits at the period start
    pref_end: np.ndarray  # (users, leaves) ... at its end (interest drift)
    hidden_age: np.ndarray  # bool: age not shown
    hidden_gender: np.ndarray
    hidden_region: np.ndarray
    # --- planted effects, kept for docs and tests
    region_effect: np.ndarray  # (regions, leaves)
    affinity_sd: float
    # --- lookups for sampling items by leaf and time
    by_leaf_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    by_leaf_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    by_leaf_cumw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    leaf_begin: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_items(self) -> int:
        return len(self.item_leaf)

    @property
    def n_users(self) -> int:
        return len(self.user_age)

    def item_ids(self) -> pa.Array:
        return format_ids("i", np.arange(self.n_items), width=len(str(self.n_items - 1)))

    def user_ids(self) -> pa.Array:
        return format_ids("u", np.arange(self.n_users), width=len(str(self.n_users - 1)))


# Leaf time keys pack (leaf, epoch second) into one sortable int64.
LEAF_KEY = np.int64(1) << np.int64(34)


def _build_catalog(cfg: GeneratorConfig, rng: np.random.Generator) -> dict[str, object]:
    leaves = vocab.LEAVES
    n_leaves = len(leaves)
    m = cfg.items
    weights = np.array([leaf.weight for leaf in leaves])
    counts = 3 + rng.multinomial(m - 3 * n_leaves, weights / weights.sum())
    leaf_of = rng.permutation(np.repeat(np.arange(n_leaves), counts))

    brands = sorted({b for leaf in leaves for b in leaf.brands})
    brand_index = {b: i for i, b in enumerate(brands)}
    brand_premium = rng.normal(0.0, 0.25, len(brands))
    nouns = [n for leaf in leaves for n in leaf.nouns]
    noun_leaf = np.array([li for li, leaf in enumerate(leaves) for _ in leaf.nouns])
    noun_offset = np.cumsum([0] + [len(leaf.nouns) for leaf in leaves])

    item_brand = np.empty(m, dtype=np.int64)
    item_noun = np.empty(m, dtype=np.int64)
    for li, leaf in enumerate(leaves):
        idx = np.flatnonzero(leaf_of == li)
        bw = 1.0 / np.arange(1, len(leaf.brands) + 1)  # a leading brand per leaf
        picks = rng.choice(len(leaf.brands), size=len(idx), p=bw / bw.sum())
        item_brand[idx] = [brand_index[leaf.brands[p]] for p in picks]
        item_noun[idx] = noun_offset[li] + rng.integers(0, len(leaf.nouns), len(idx))

    centers = rng.normal(0.0, 1.0, (n_leaves, LATENT_DIM))
    latent = 0.7 * centers[leaf_of] + 0.7 * rng.normal(0.0, 1.0, (m, LATENT_DIM))
    style = np.abs(latent).argmax(axis=1)
    style_sign = np.sign(latent[np.arange(m), style]).astype(np.int64)
    style_sign[style_sign == 0] = 1

    noun_factor = np.array([f for leaf in leaves for f in leaf.noun_price])
    median = np.array([leaf.median_price for leaf in leaves])[leaf_of] * noun_factor[item_noun]
    sigma = np.array([leaf.price_sigma for leaf in leaves])[leaf_of]
    # Premium-styled items and premium brands cost more.
    log_dev = sigma * rng.normal(0.0, 1.0, m) + 0.25 * latent[:, 0] + brand_premium[item_brand]
    raw = median * np.exp(log_dev)
    price = np.where(
        raw >= 10, np.maximum(np.round(raw) - 0.01, 0.99), np.maximum(np.round(raw, 2), 0.49)
    )
    price_z = np.log(price / median) / sigma

    rank = rng.permutation(m)
    weight = (rank + 1.0) ** -0.9 * rng.lognormal(0.0, 0.3, m)

    # The first three items of each leaf existed before the period, so every leaf can be browsed.
    old = rng.random(m) >= cfg.new_item_share
    for li in range(n_leaves):
        old[rng.choice(np.flatnonzero(leaf_of == li), 3, replace=False)] = True
    created = np.where(
        old,
        cfg.t0 - rng.integers(DAY, 365 * DAY, m),
        cfg.t0 + rng.integers(0, max(cfg.t1 - cfg.t0 - DAY, 1), m),
    )

    image = None
    if cfg.image_dim:
        centroid = rng.normal(0.0, 1.0, (n_leaves, cfg.image_dim))
        proj = rng.normal(0.0, 1.0 / np.sqrt(LATENT_DIM), (LATENT_DIM, cfg.image_dim))
        img = (
            centroid[leaf_of] + 0.8 * latent @ proj + 0.5 * rng.normal(0.0, 1.0, (m, cfg.image_dim))
        )
        image = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)

    return {
        "item_leaf": leaf_of, "item_brand": item_brand, "item_noun": item_noun,
        "item_latent": latent, "item_style": style, "item_style_sign": style_sign,
        "item_color": rng.integers(0, len(vocab.COLORS), m), "item_price": price,
        "item_price_z": price_z, "item_weight": weight, "item_created": created,
        "item_image": image, "brands": brands, "nouns": nouns, "noun_leaf": noun_leaf,
    }  # fmt: skip


def _build_users(cfg: GeneratorConfig, rng: np.random.Generator) -> dict[str, object]:
    leaves = vocab.LEAVES
    n = cfg.users
    age = np.clip(np.round(rng.normal(38.0, 13.0, n)), 16, 85).astype(np.int64)
    female = np.where(rng.random(n) < 0.51, 1.0, -1.0)
    region = rng.choice(
        len(vocab.REGIONS), size=n, p=np.array(vocab.REGION_WEIGHTS) / sum(vocab.REGION_WEIGHTS)
    )
    new = rng.random(n) < cfg.new_user_share
    signup = np.where(
        new,
        cfg.t0 + rng.integers(0, max(cfg.t1 - cfg.t0 - DAY, 1), n),
        cfg.t0 - rng.integers(DAY, 730 * DAY, n),
    )
    activity = rng.lognormal(0.0, 1.0, n)
    sensitivity = rng.lognormal(0.0, 0.35, n) * np.where(age < 25, 1.3, 1.0)

    base = np.log(np.array([leaf.weight for leaf in leaves]))
    age_eff = np.array([leaf.age for leaf in leaves])
    fem_eff = np.array([leaf.female for leaf in leaves])
    region_effect = rng.normal(0.0, 0.3, (len(vocab.REGIONS), len(leaves)))
    pref_start = (
        base[None, :]
        + np.outer((age - 38.0) / 10.0, age_eff)
        + np.outer(female, fem_eff)
        + region_effect[region]
        + rng.normal(0.0, 0.9, (n, len(leaves)))
    )
    pref_end = pref_start + cfg.drift * rng.normal(0.0, 0.8, pref_start.shape)

    latent = rng.normal(0.0, 0.8, (n, LATENT_DIM))
    # Price-sensitive shoppers lean away from premium-styled items.
    latent[:, 0] -= 0.5 * (np.log(sensitivity) / 0.35)
    return {
        "user_age": age, "user_female": female, "user_region": region, "user_signup": signup,
        "user_activity": activity, "user_sensitivity": sensitivity, "user_latent": latent,
        "pref_start": pref_start.astype(np.float32), "pref_end": pref_end.astype(np.float32),
        "hidden_age": rng.random(n) < 0.05, "hidden_gender": rng.random(n) < 0.03,
        "hidden_region": rng.random(n) < 0.02, "region_effect": region_effect,
    }  # fmt: skip


def build_world(cfg: GeneratorConfig) -> World:
    """Draw the catalog and the shoppers for ``cfg`` (deterministic for its seed)."""
    catalog = _build_catalog(cfg, rng_for(cfg, 1))
    users = _build_users(cfg, rng_for(cfg, 2))
    probe = rng_for(cfg, 3)
    ui = probe.integers(0, cfg.users, 4096)
    ii = probe.integers(0, cfg.items, 4096)
    dots = np.einsum("ij,ij->i", users["user_latent"][ui], catalog["item_latent"][ii])  # type: ignore[index]
    world = World(cfg=cfg, affinity_sd=float(dots.std()) or 1.0, **catalog, **users)  # type: ignore[arg-type]

    # Items sorted by (leaf, created): the items of a leaf that exist at time t are a prefix.
    keys = world.item_leaf.astype(np.int64) * LEAF_KEY + world.item_created.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    world.by_leaf_order = order
    world.by_leaf_keys = keys[order]
    world.by_leaf_cumw = np.concatenate([[0.0], np.cumsum(world.item_weight[order])])
    world.leaf_begin = np.searchsorted(world.by_leaf_keys, np.arange(len(vocab.LEAVES)) * LEAF_KEY)
    return world


# ----------------------------------------------------------------------------- tables


def _ts_array(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, type=pa.int64()).cast(TS)


def _text(world: World) -> tuple[list[str], list[str]]:
    """Titles and descriptions from the item's brand, style, color, noun and leaf features."""
    rng = rng_for(world.cfg, 4)
    model_no = rng.integers(1, 99, world.n_items)
    suffix = rng.choice(["", " Pro", " Plus", " Mini", " Max", " Lite"], world.n_items)
    use = rng.integers(0, len(vocab.USE_PHRASES), world.n_items)
    feat = rng.integers(0, 4, (world.n_items, 2))
    # The second-strongest latent dimension adds a second style word.
    second = np.argsort(-np.abs(world.item_latent), axis=1)[:, 1]
    second_sign = np.sign(world.item_latent[np.arange(world.n_items), second])
    titles: list[str] = []
    descriptions: list[str] = []
    for i in range(world.n_items):
        leaf = vocab.LEAVES[world.item_leaf[i]]
        brand = world.brands[world.item_brand[i]]
        noun = world.nouns[world.item_noun[i]]
        s1 = vocab.STYLE_WORDS[world.item_style[i]][0 if world.item_style_sign[i] > 0 else 1]
        s2 = vocab.STYLE_WORDS[second[i]][0 if second_sign[i] > 0 else 1]
        color = vocab.COLORS[world.item_color[i]]
        f1, f2 = leaf.features[feat[i, 0]], leaf.features[(feat[i, 0] + 1 + feat[i, 1] % 3) % 4]
        titles.append(
            f"{brand} {s1.capitalize()} {noun.title()} {model_no[i]}{suffix[i]} - {color.capitalize()}"
        )
        article = "An" if s1[0] in "aeiou" else "A"
        descriptions.append(
            f"{article} {s1}, {s2} {noun} by {brand}, made for {vocab.USE_PHRASES[use[i]]}. "
            f"Known for its {f1} and {f2}. Colour: {color}. Category: {leaf.path.split('/')[-1].lower()}."
        )
    return titles, descriptions


def items_table(world: World) -> pa.Table:
    titles, descriptions = _text(world)
    leaves = np.array([leaf.path for leaf in vocab.LEAVES], dtype=object)
    cols: dict[str, pa.Array] = {
        "item_id": world.item_ids(),
        "title": pa.array(titles, type=pa.string()),
        "description": pa.array(descriptions, type=pa.string()),
        "category": pa.array(leaves[world.item_leaf], type=pa.string()),
        "brand": pa.array(np.array(world.brands, dtype=object)[world.item_brand], type=pa.string()),
        "price": pa.array(world.item_price, type=pa.float64()),
        "currency": pa.array(["USD"] * world.n_items, type=pa.string()),
        "created_ts": _ts_array(world.item_created),
        "image_url": pa.nulls(world.n_items, pa.string()),
    }
    if world.item_image is not None:
        dim = world.item_image.shape[1]
        flat = pa.array(world.item_image.reshape(-1), type=pa.float32())
        offsets = pa.array(np.arange(0, world.n_items * dim + 1, dim, dtype=np.int32))
        cols["image_embedding"] = pa.ListArray.from_arrays(offsets, flat)
    return pa.table(cols, schema=schema("items", with_embedding=world.item_image is not None))


def users_table(world: World) -> pa.Table:
    genders = np.where(world.user_female > 0, "F", "M").astype(object)
    regions = np.array(vocab.REGIONS, dtype=object)[world.user_region]
    cols = {
        "user_id": world.user_ids(),
        "signup_ts": _ts_array(world.user_signup),
        "age": pa.array(world.user_age, type=pa.int32(), mask=world.hidden_age),
        "gender": pa.array(genders, type=pa.string(), mask=world.hidden_gender),
        "region": pa.array(regions, type=pa.string(), mask=world.hidden_region),
    }
    return pa.table(cols, schema=schema("users"))


# ----------------------------------------------------------------------------- sampling


def sample_from_leaf(
    world: World, leaves: np.ndarray, times: np.ndarray, rng: np.random.Generator, m: int
) -> np.ndarray:
    """``m`` items per row drawn by base popularity from the row's leaf, among items that exist at its time.

    Returns an ``(len(leaves), m)`` array of item numbers (draws may repeat).
    """
    keys = leaves.astype(np.int64) * LEAF_KEY + times.astype(np.int64)
    end = np.searchsorted(world.by_leaf_keys, keys, side="right")
    begin = world.leaf_begin[leaves]
    lo = world.by_leaf_cumw[begin]
    hi = world.by_leaf_cumw[end]
    r = lo[:, None] + rng.random((len(leaves), m)) * (hi - lo)[:, None]
    pos = np.searchsorted(world.by_leaf_cumw, r, side="right") - 1
    pos = np.clip(pos, begin[:, None], (end - 1)[:, None])
    return world.by_leaf_order[pos]


def affinity(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """True taste match of user and item in standard units (same shape as ``items``)."""
    u = world.user_latent[users]
    v = world.item_latent[items]
    if items.ndim == 2:
        return np.einsum("nd,nmd->nm", u, v) / world.affinity_sd
    return np.einsum("nd,nd->n", u, v) / world.affinity_sd
