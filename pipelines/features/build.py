"""``shopml features build``: compute the feature tables of a validated snapshot.

Writes ``user_profile``, ``item_stats`` (one row per entity per grid time) and
``item_content`` (one row per item, at its creation time) as parquet under the feature
store folder, with the segment model and a ``build.json`` describing the build. The new
tables replace the previous build in one step (a folder rename), so readers never see a
mix of two builds.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import category_medians, feature_times, load_timeline, snapshot_end
from pipelines.errors import ShopMLError
from pipelines.features.config import FeatureConfig
from pipelines.features.item_content import content_table
from pipelines.features.item_stats import stats_table
from pipelines.features.segments import assign_segments, describe, fit_segments
from pipelines.features.user_profile import advance, new_state, profile_table
from pipelines.io import staging_folder, swap_in, write_json
from pipelines.validation.validate import require_accepted

log = logging.getLogger(__name__)
TABLES = ("user_profile", "item_stats", "item_content")


@dataclass(frozen=True)
class FeatureBuild:
    data_dir: Path
    snapshot_id: str
    as_of: datetime
    times: tuple[datetime, ...]
    rows: dict[str, int]
    text_model: str
    segments: dict[str, Any]
    seconds: float


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def build_features(
    *,
    snapshot_uri: str | Path,
    out_dir: str | Path,
    cfg: FeatureConfig,
    as_of: datetime | None = None,
) -> FeatureBuild:
    """Compute the feature tables of the accepted snapshot at ``snapshot_uri`` into ``out_dir/data``.

    ``as_of`` (default: the midnight after the last event) is the last grid time; rows are
    computed every ``cfg.every_days`` back ``cfg.history_days``. Refuses a snapshot that
    is not validated or was quarantined.
    """
    started = time.perf_counter()
    snap = Snapshot.open(snapshot_uri)
    require_accepted(snap)
    if snap.rows("events") == 0:
        raise ShopMLError(
            f"snapshot {snap.path} has no events ({snap.manifest.get('kind', 'interactions')} snapshot); "
            "features are computed from shop events"
        )
    as_of = as_of or snapshot_end(snap)
    tl = load_timeline(snap)
    times = feature_times(tl, as_of.timestamp(), cfg.history_days, cfg.every_days)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with staging_folder(out / "data") as tmp:
        (tmp / "models").mkdir()
        state = new_state(tl)
        advance(state, tl, times[0], cfg, category_medians(tl, times[0]))
        model = fit_segments(tl, state, times[0], cfg)
        model.save(tmp / "models")
        rows = dict.fromkeys(TABLES, 0)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for k, t in enumerate(times):
                advance(state, tl, t, cfg, category_medians(tl, t))
                tables = {
                    "user_profile": profile_table(
                        tl, state, t, cfg, assign_segments(model, tl, state, t, cfg)
                    ),
                    "item_stats": stats_table(tl, t, cfg),
                }
                for name, table in tables.items():
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(
                            tmp / f"{name}.parquet", table.schema, compression="zstd"
                        )
                    writers[name].write_table(table)
                    rows[name] += table.num_rows
                log.info(
                    "features at %s (%d/%d): %s user rows, %s item rows",
                    _utc(t).isoformat(), k + 1, len(times), f"{tables['user_profile'].num_rows:,}", f"{tables['item_stats'].num_rows:,}",
                )  # fmt: skip
        finally:
            for w in writers.values():
                w.close()
        content, text_model = content_table(tl, cfg, times)
        pq.write_table(content, tmp / "item_content.parquet", compression="zstd")
        rows["item_content"] = content.num_rows
        build = FeatureBuild(
            data_dir=out / "data",
            snapshot_id=snap.id,
            as_of=as_of,
            times=tuple(_utc(t) for t in times),
            rows=rows,
            text_model=text_model,
            segments=describe(model),
            seconds=time.perf_counter() - started,
        )
        meta = {
            "snapshot_id": snap.id,
            "snapshot_path": str(snap.path),
            "as_of": as_of.isoformat(),
            "times": [t.isoformat() for t in build.times],
            "rows": rows,
            "text_model": text_model,
            "segments": build.segments,
            "config": asdict(cfg),
            "built_at": datetime.now(UTC).isoformat(),
            "seconds": round(build.seconds, 2),
        }
        write_json(tmp / "build.json", meta)
        swap_in(tmp, out / "data")
    return build


def read_build(out_dir: str | Path) -> dict[str, Any]:
    """The ``build.json`` of the current feature build."""
    path = Path(out_dir) / "data" / "build.json"
    if not path.is_file():
        raise ShopMLError(
            f"no feature build in {Path(out_dir)}; run `shopml features build SNAPSHOT` first"
        )
    return dict(json.loads(path.read_text()))
