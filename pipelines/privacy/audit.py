"""``shopml privacy audit USER_ID``: every trace of a shopper in the stores ShopML keeps.

It reads everything, not only what ``forget`` rewrites, so it is the proof that an erasure
worked: every file under SHOPML_HOME (parquet rows, text arrays, JSON lines, SQLite
databases — MLflow's, Airflow's, the online store —, text files and logs), the online store
(SQLite or Redis), the serving bucket and a remote work storage (every object). What it
cannot read is listed, never counted as clean.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pipelines.data.privacy import privacy_key
from pipelines.features.store import online_users
from pipelines.privacy.forget import check_request, stored_forms
from pipelines.privacy.scan import scan_file
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.settings import Settings


@dataclass
class AuditReport:
    forms: int  # how many stored forms of the ids were looked for
    traces: list[tuple[str, str, int]] = field(default_factory=list)  # store, where, count
    unreadable: list[str] = field(default_factory=list)
    not_searched: list[str] = field(default_factory=list)
    files: int = 0

    @property
    def clean(self) -> bool:
        return not self.traces


def _store_of(path: Path, settings: Settings) -> str:
    named = [
        (settings.snapshots_dir, "snapshots"),
        (settings.feature_store_dir, "feature store"),
        (settings.serving_events_dir, "serving events"),
        (settings.airflow_home, "airflow"),
        (settings.home / "mlflow", "mlflow"),
        (settings.home / "bucket", "serving bucket"),
        (settings.home / "runs", "retrain runs"),
        (settings.home / "search", "search models"),
        (settings.home / "evaluations", "evaluations"),
        (settings.home / "serving", "serving"),
    ]
    for root, name in named:
        if path.is_relative_to(root):
            return name
    return "other"


def audit(user_ids: list[str], settings: Settings) -> AuditReport:
    ids = check_request(user_ids, "audit")
    # without a key nothing was ever pseudonymised or erased: look for the ids as given
    forms = stored_forms(ids, privacy_key(settings)) if settings.privacy_key_file.is_file() else ids
    report = AuditReport(len(forms))
    rows = online_users(forms, settings)
    if rows:
        where = settings.redis_url if settings.online_store == "redis" else "online.db"
        report.traces.append(("online store", where, rows))
    secrets = settings.privacy_key_file.parent
    for root in _roots(settings):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or path.is_relative_to(secrets):
                continue
            report.files += 1
            found = scan_file(path, forms)
            if not found.readable:
                report.unreadable.append(str(path))
            elif found.traces:
                report.traces.append((_store_of(path, settings), str(path), found.traces))
    for uri, store in ((settings.serving_bucket_uri, "serving bucket"), (settings.work_uri, "retrain runs")):  # fmt: skip
        if urlparse(uri).scheme == "s3":
            _scan_bucket(open_bucket(uri, settings.s3_endpoint_url), forms, store, report)
    if urlparse(settings.mlflow_tracking_uri).scheme in ("http", "https"):
        # a remote tracking server: its artifacts through its API (the embedded store's
        # files and database are under SHOPML_HOME, searched above)
        from pipelines.privacy.mlflow_store import scan_mlflow

        remote = scan_mlflow(settings, forms)
        report.files += remote.files
        report.traces += [("mlflow", where, n) for where, n in remote.traces]
        report.unreadable += remote.unreadable
        report.not_searched += remote.not_searched
        report.not_searched.append(
            f"the MLflow tracking server's database ({settings.mlflow_tracking_uri}): ShopML "
            "logs no shopper ids to it (metrics, parameters, tags); search it where it lives"
        )
    return report


def _roots(settings: Settings) -> list[Path]:
    """SHOPML_HOME and the stores configured outside it."""
    roots = [settings.home]
    for extra in (settings.snapshots_dir, settings.feature_store_dir, settings.serving_events_dir, settings.airflow_home):  # fmt: skip
        if extra.is_dir() and not any(extra.is_relative_to(r) for r in roots):
            roots.append(extra)
    for uri in (settings.serving_bucket_uri, settings.work_uri):
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            path = Path(parsed.path)
            if path.is_dir() and not any(path.is_relative_to(r) for r in roots):
                roots.append(path)
    return [r for r in roots if r.is_dir()]


def _scan_bucket(bucket: Bucket, forms: list[str], store: str, report: AuditReport) -> None:
    with tempfile.TemporaryDirectory(prefix="shopml-audit-") as tmp:
        for key in bucket.keys(""):
            local = Path(tmp) / key.replace("/", "__")
            if not bucket.get_file(key, local):
                continue
            report.files += 1
            found = scan_file(local, forms)
            if not found.readable:
                report.unreadable.append(bucket.url(key))
            elif found.traces:
                report.traces.append((store, bucket.url(key), found.traces))
            local.unlink(missing_ok=True)
