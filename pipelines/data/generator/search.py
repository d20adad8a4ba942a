"""Simulated shop search: queries written from a wanted item, a naive engine, biased clicks.

A shopper who wants item *t* types a query from its attributes: the catalog noun or
a synonym, maybe the brand, a style word or a colour, sometimes with a typo. The
shop's baseline engine ranks 25 popular items of *t*'s leaf by exact word matches
(it knows no synonyms and no typos) plus popularity. Clicks follow a position-based
model: a result at position p (1-based) is examined with probability p^-0.8 and
clicked with a probability that grows with its true relevance grade (0-3) and the
shopper's taste match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.generator import vocab
from pipelines.data.generator.world import World, affinity, sample_from_leaf

RESULTS = 10
CANDIDATES = 24
EXAMINE_POWER = 0.8


@dataclass
class Searches:
    texts: list[str]
    shown: np.ndarray  # (n, RESULTS) item numbers, -1 where the engine had fewer results
    clicked: np.ndarray  # (n, RESULTS) bool
    grade: np.ndarray  # (n, RESULTS) true relevance 0-3 of each shown item


def _typo(word: str, r: int) -> str:
    """One keyboard slip in a word of 4+ letters: swap, drop or double a letter."""
    if len(word) < 4:
        return word
    i = 1 + r % (len(word) - 2)
    op = (r // 7) % 3
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _misspell(term: str, r: int) -> str:
    words = term.split(" ")
    k = r % len(words)
    words[k] = _typo(words[k], r // 3)
    return " ".join(words)


def _unique_rows(cands: np.ndarray) -> np.ndarray:
    """Mask of the first occurrence of each item within each row."""
    order = np.argsort(cands, axis=1, kind="stable")
    s = np.take_along_axis(cands, order, axis=1)
    first_sorted = np.ones_like(s, dtype=bool)
    first_sorted[:, 1:] = s[:, 1:] != s[:, :-1]
    mask = np.zeros_like(first_sorted)
    np.put_along_axis(mask, order, first_sorted, axis=1)
    return mask


def run_searches(
    world: World,
    users: np.ndarray,
    targets: np.ndarray,
    times: np.ndarray,
    rng: np.random.Generator,
) -> Searches:
    n = len(targets)
    noun_syns = [vocab.SYNONYMS.get(noun, ()) for noun in world.nouns]
    has_syn = np.array([len(s) > 0 for s in noun_syns])
    t_noun = world.item_noun[targets]
    use_syn = (rng.random(n) < 0.3) & has_syn[t_noun]
    with_brand = rng.random(n) < 0.45
    with_style = rng.random(n) < 0.35
    with_color = rng.random(n) < 0.15
    typo = rng.random((3, n)) < 0.08  # noun, brand, style
    typo[1] &= with_brand
    typo[2] &= with_style
    rand = rng.integers(0, 1 << 30, (4, n))

    texts: list[str] = []
    for q in range(n):
        t = targets[q]
        noun = world.nouns[t_noun[q]]
        if use_syn[q]:
            syns = noun_syns[t_noun[q]]
            noun = syns[rand[0, q] % len(syns)]
        if typo[0, q]:
            noun = _misspell(noun, int(rand[1, q]))
        terms: list[str] = []
        if with_brand[q]:
            brand = world.brands[world.item_brand[t]].lower()
            terms.append(_misspell(brand, int(rand[2, q])) if typo[1, q] else brand)
        if with_style[q]:
            style = vocab.STYLE_WORDS[world.item_style[t]][0 if world.item_style_sign[t] > 0 else 1]
            terms.append(_misspell(style, int(rand[3, q])) if typo[2, q] else style)
        if with_color[q]:
            terms.append(vocab.COLORS[world.item_color[t]])
        terms.append(noun)
        if rand[0, q] % 5 == 0 and len(terms) > 1:  # some shoppers type the noun first
            terms = [terms[-1], *terms[:-1]]
        texts.append(" ".join(terms).lower())

    cands = np.concatenate(
        [
            targets[:, None],
            sample_from_leaf(world, world.item_leaf[targets], times, rng, CANDIDATES),
        ],
        axis=1,
    )
    valid = _unique_rows(cands)
    noun_eq = world.item_noun[cands] == t_noun[:, None]
    brand_eq = world.item_brand[cands] == world.item_brand[targets][:, None]
    style_eq = (world.item_style[cands] == world.item_style[targets][:, None]) & (
        world.item_style_sign[cands] == world.item_style_sign[targets][:, None]
    )
    engine = (
        2.0 * (noun_eq & ~(use_syn | typo[0])[:, None])
        + 1.5 * (brand_eq & (with_brand & ~typo[1])[:, None])
        + 1.0 * (style_eq & (with_style & ~typo[2])[:, None])
        + 0.3 * np.log(world.item_weight[cands])
        + rng.normal(0.0, 0.5, cands.shape)
    )
    engine[~valid] = -np.inf
    top = np.argsort(-engine, axis=1, kind="stable")[:, :RESULTS]
    shown = np.take_along_axis(cands, top, axis=1)
    ok = np.take_along_axis(valid, top, axis=1)
    shown[~ok] = -1

    # True relevance to what the shopper meant (typos and synonyms do not change intent).
    grade = np.take_along_axis(
        noun_eq
        * (
            1
            + np.where(with_brand[:, None], brand_eq, 1)
            + np.where(with_style[:, None], style_eq, 1)
        ),
        top,
        axis=1,
    ).astype(np.float64)
    grade[~ok] = 0.0
    safe = np.where(ok, shown, 0)
    attract = 1.0 / (1.0 + np.exp(-(-3.2 + 1.1 * grade + 0.5 * affinity(world, users, safe))))
    examine = (np.arange(1, RESULTS + 1, dtype=np.float64)) ** -EXAMINE_POWER
    clicked = ok & (rng.random(shown.shape) < examine[None, :] * attract)
    return Searches(texts=texts, shown=shown, clicked=clicked, grade=grade)
