"""``shopml data import movielens-100k``: the GroupLens MovieLens 100K files as a snapshot.

Mapping into the contract (docs/data-import.md explains each choice):

- ``u.data`` (user, item, rating, unix time; tab-separated): one event per rating.
  The rating is kept as ``value``; the event type grades it like a shop funnel:
  4-5 stars -> ``purchase``, 3 -> ``add_to_cart``, 1-2 -> ``view``. ``session_id`` is
  the user and the UTC day (``u12-19971104``): ratings given the same day form a session.
- ``u.user`` (id | age | gender | occupation | zip): age, gender (M/F) and the zip code as
  ``region``; occupation has no contract column and is left out. MovieLens has no sign-up
  time, so ``signup_ts`` is the user's first rating.
- ``u.item`` (id | title | release date | video date | IMDb URL | 19 genre flags; Latin-1):
  the category is ``Movies/<genre>`` with the film's most specific genre (the one with the
  fewest films); all genres and the release date go into the description. Films have no
  brand and no price: ``price`` is 1.0 in currency ``XXX`` (ISO 4217's "no currency").
  ``created_ts`` is the release date, or the first rating if that is earlier or missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.conform import ParseOptions, conform, require
from pipelines.data.importers import ImportResult, log_table
from pipelines.data.importers.readers import read_text_table
from pipelines.data.privacy import Privacy
from pipelines.data.snapshot import Snapshot, check_target, write_snapshot
from pipelines.errors import ContractError
from pipelines.io import resolved

IMPORTER_VERSION = "1"
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
RATING_TO_EVENT = {1: "view", 2: "view", 3: "add_to_cart", 4: "purchase", 5: "purchase"}


def _read(src: Path, name: str, sep: str, names: list[str]) -> pd.DataFrame:
    df = read_text_table(
        src / name, encoding="latin-1", delimiter=sep, header=False, names=names, name=name
    )
    if len(df) == 0:
        raise ContractError(name, "no data rows")
    return df


def _ints(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    num = pd.to_numeric(df[column], errors="coerce")
    require(name, column, df[column], num.notna() & (num == num.round()), "a whole number")
    return num.to_numpy(dtype=np.int64)


def _genre_names(src: Path) -> tuple[str, ...]:
    path = src / "u.genre"
    if not path.is_file():
        return GENRES
    g = read_text_table(
        path,
        encoding="latin-1",
        delimiter="|",
        header=False,
        names=["genre", "index"],
        name="u.genre",
    )
    g = g.dropna()
    g["index"] = _ints(g, "index", "u.genre")
    return tuple(g.sort_values("index")["genre"].tolist())


def _load(src: Path) -> dict[str, pd.DataFrame]:
    if not src.is_dir():
        raise ContractError(
            str(src), "not a folder; point to the unpacked ml-100k folder (u.data, u.user, u.item)"
        )
    ratings = _read(src, "u.data", "\t", ["user", "item", "rating", "ts"])
    for col in ("user", "item", "rating", "ts"):
        ratings[col] = _ints(ratings, col, "u.data")
    # Unix seconds from 1970 to 2100; anything else is a corrupt line, not a date.
    ts = ratings["ts"]
    require("u.data", "ts", ts, ts.between(0, 4_102_444_800), "a unix time between 1970 and 2100")
    rating = ratings["rating"]
    require("u.data", "rating", rating, rating.isin(list(RATING_TO_EVENT)), "a rating 1-5")

    users = _read(src, "u.user", "|", ["user", "age", "gender", "occupation", "zip"])
    genres = _genre_names(src)
    items = _read(src, "u.item", "|", ["item", "title", "release", "video", "url", *genres])
    return {
        "ratings": ratings,
        "users": users,
        "items": items,
        "genres": pd.DataFrame({"genre": genres}),
    }


def _items_frame(items: pd.DataFrame, genres: list[str], first_rating: pd.Series) -> pd.DataFrame:
    flags = items[genres].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).to_numpy()
    films_per_genre = flags.sum(axis=0)
    # Most specific genre: the flagged one with the fewest films (ties: u.genre order).
    rarity = np.where(flags == 1, films_per_genre[None, :], np.iinfo(np.int64).max)
    primary = np.where(flags.any(axis=1), rarity.argmin(axis=1), 0)
    names = np.array(genres, dtype=object)
    release = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce", utc=True)
    ids = items["item"].astype(str)
    first = pd.to_datetime(ids.map(first_rating), unit="s", utc=True)
    created = release.where(release.notna() & (release <= first.fillna(release)), first)
    created = created.fillna(release)
    descriptions = []
    for row_flags, title, rel in zip(
        flags, items["title"].fillna(""), items["release"].fillna(""), strict=True
    ):
        listed = ", ".join(names[row_flags == 1]) or "unknown"
        descriptions.append(f"{title}. Genres: {listed}." + (f" Released {rel}." if rel else ""))
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": items["title"]
            .fillna("")
            .where(items["title"].fillna("") != "", "unknown title"),
            "description": descriptions,
            "category": "Movies/"
            + pd.Series(names[primary], index=items.index).str.replace("/", "-"),
            "brand": None,
            "price": 1.0,
            "currency": "XXX",
            "created_ts": created,
        }
    )


def import_movielens_100k(
    src: str | Path, *, out: str | Path, overwrite: bool = False, privacy: Privacy | None = None
) -> ImportResult:
    """Import the ml-100k folder ``src`` into a snapshot at ``out`` (atomically);
    ``privacy``: pseudonyms and erased shoppers (:mod:`pipelines.data.privacy`)."""
    check_target(out, overwrite)  # a conflicting --out is refused before any reading
    src = Path(src)
    started = time.perf_counter()
    raw = _load(src)
    ratings, users, items = raw["ratings"], raw["users"], raw["items"]
    genres = raw["genres"]["genre"].tolist()
    first_rating = ratings.groupby("user")["ts"].min()
    first_item_rating = ratings.groupby("item")["ts"].min()
    first_item_rating.index = first_item_rating.index.astype(str)

    users_df = pd.DataFrame(
        {
            "user_id": users["user"].astype(str),
            "signup_ts": pd.to_numeric(users["user"], errors="coerce").map(first_rating),
            "age": users["age"],
            "gender": users["gender"],
            "region": users["zip"],
        }
    )
    day = pd.to_datetime(ratings["ts"], unit="s", utc=True).dt.strftime("%Y%m%d")
    events_df = pd.DataFrame(
        {
            "event_id": "r" + pd.Series(np.arange(1, len(ratings) + 1), dtype=str),
            "user_id": ratings["user"].astype(str),
            "item_id": ratings["item"].astype(str),
            "event_type": ratings["rating"].map(RATING_TO_EVENT),
            "ts": ratings["ts"],
            "session_id": "u" + ratings["user"].astype(str) + "-" + day,
            "value": ratings["rating"].astype(float),
        }
    )
    seconds = {"signup_ts": ParseOptions(unit="s"), "ts": ParseOptions(unit="s")}
    tables = {
        "users": conform("users", users_df, file="u.user", parse=seconds),
        "items": conform("items", _items_frame(items, genres, first_item_rating), file="u.item"),
        "events": conform("events", events_df, file="u.data", parse=seconds),
    }
    log_table("events", "u.data", tables["events"].num_rows, time.perf_counter() - started)
    notes = [
        "ratings become events: 4-5 stars purchase, 3 add_to_cart, 1-2 view; the rating is the event value",
        "signup_ts is the user's first rating; sessions are user x UTC day",
        "items have no price: price 1.0, currency XXX; category is Movies/<most specific genre>",
    ]
    producer = {
        "name": "shopml.importers.movielens_100k",
        "version": IMPORTER_VERSION,
        "source_dir": str(resolved(src)),
    }
    with write_snapshot(
        out,
        source="movielens-100k",
        producer=producer,
        overwrite=overwrite,
        notes=notes,
        privacy=privacy,
    ) as w:
        for name, table in tables.items():
            w.write_table(name, table)
    snap = Snapshot.open(out)
    return ImportResult(
        snap.path, snap.id, dict(snap.manifest["row_counts"]), tuple(snap.manifest["notes"])
    )
