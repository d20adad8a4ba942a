"""``shopml privacy forget``: erase shoppers from the stores ShopML keeps on this machine.

In order:
1. the erasure ledger's ``requested`` entry: the shoppers are on the erasure list from now
   on (every import drops them; the serving API reloads the list);
2. the online store (SQLite rows or Redis keys);
3. every snapshot under ``snapshots_dir`` that holds them: rewritten without their rows as
   a new content-hashed snapshot in the same folder (the old one removed with its frozen
   evaluation set, which the next evaluation freezes anew); validated again when it had
   been validated;
4. the feature tables under ``feature_store_dir`` (their rows dropped);
5. retrain runs in the work storage that hold them (the run folder, or every object of the
   run in a remote ``s3://`` one, removed);
6. the serving events spool (their lines dropped; a file a live serving process is still
   appending to is left for the next forget and said so);
7. everything else under SHOPML_HOME that ShopML writes as text (reports, summaries, logs):
   the ids replaced by ``[erased]``; search models and evaluation folders built from them
   are removed;
8. every promoted version in the serving bucket that holds them: bundle, served feature
   values and report rewritten, recorded in the promotion ledger
   (:mod:`pipelines.privacy.bundles`);
9. MLflow's artifact store: registered bundles and run files rewritten
   (:mod:`pipelines.privacy.mlflow_store`);
10. the erasure ledger's ``completed`` entry with the rows removed per store.

What is not done here is returned as ``pending`` (and :mod:`pipelines.privacy.audit` still
finds it): see docs/privacy.md.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.data.contract import TABLES
from pipelines.data.privacy import USER_TABLES, Privacy, erasure_hash, privacy_key, pseudonym
from pipelines.data.snapshot import MANIFEST, Snapshot, write_snapshot
from pipelines.errors import ConfigError
from pipelines.features.store import online_users
from pipelines.privacy import erasures
from pipelines.privacy.bundles import erase_promoted, first_line
from pipelines.privacy.mlflow_store import erase_mlflow
from pipelines.privacy.scan import scan_file, scrub_file
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.settings import Settings
from pipelines.validation.validate import read_status, validate_snapshot

log = logging.getLogger(__name__)
MAX_ID = 128  # the serving API's limit on a shopper's id
_SPOOL = re.compile(r"^events-\d{8}T\d+-(\d+)\.jsonl$")
# folders under SHOPML_HOME this module handles store by store, or must not touch
_NOT_TEXT = ("secrets", "bucket", "mlflow", "serving/cache", "scratch")
_REMOVABLE = ("search", "evaluations")  # model and report folders derived from the data


@dataclass
class ForgetReport:
    request_seq: int
    completed_seq: int
    shoppers: int
    stores: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, str] = field(default_factory=dict)  # snapshot folder -> new id
    revalidated: dict[str, bool] = field(default_factory=dict)  # folder -> accepted
    pending: list[str] = field(default_factory=list)
    bundles: list[str] = field(default_factory=list)  # promoted versions rewritten


def stored_forms(user_ids: list[str], key: bytes) -> list[str]:
    """Every form a shopper's id may be stored in: the shop's id and its pseudonym."""
    out: list[str] = []
    for uid in user_ids:
        for form in (uid, pseudonym(uid, key)):
            if form not in out:
                out.append(form)
    return out


def check_request(user_ids: list[str], reason: str) -> list[str]:
    ids = [u.strip() for u in user_ids]
    bad = [u for u in ids if not u or len(u) > MAX_ID]
    if not ids or bad:
        raise ConfigError(f"USER_ID: give one or more shoppers' ids of 1-{MAX_ID} characters")
    if not reason.strip():
        raise ConfigError("--reason: say why (e.g. 'GDPR Art. 17 request #123'); it is recorded")
    return list(dict.fromkeys(ids))


def forget(
    user_ids: list[str], *, reason: str, requested_by: str, settings: Settings
) -> ForgetReport:
    ids = check_request(user_ids, reason)
    key = privacy_key(settings, create=True)
    forms = stored_forms(ids, key)
    hashes = sorted({erasure_hash(f, key) for f in forms})
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    asked = erasures.request(bucket, hashes, reason=reason.strip(), requested_by=requested_by)
    log.info("erasure request %d recorded: %d shopper(s) on the erasure list", asked.seq, len(ids))
    report = ForgetReport(asked.seq, 0, len(ids))
    stores = report.stores
    stores["erasure_list"] = len(ids)
    stores["online_store"] = online_users(forms, settings, delete=True)
    privacy = Privacy(key, erased=frozenset(hashes))
    stores["snapshots"] = _snapshots(settings, forms, privacy, asked.seq, report)
    stores["feature_tables"] = sum(
        scrub_file(p, forms) for p in sorted(settings.feature_store_dir.rglob("*.parquet"))
    )
    stores["runs"] = _runs(settings, forms, report)
    stores["serving_events"] = _spool(settings.serving_events_dir, forms, report)
    text, removed = _home(settings, forms, report)
    stores["reports_and_logs"] = text
    stores["model_and_report_folders"] = removed
    served = erase_promoted(bucket, forms, request_seq=asked.seq, requested_by=requested_by)
    stores["served_bundles"] = served.rows
    report.bundles = served.versions
    report.pending += served.pending
    registry = erase_mlflow(settings, forms)
    stores["mlflow_bundles"] = registry.rows
    stores["mlflow_files"] = registry.files
    report.bundles += [f"MLflow {v}" for v in registry.versions]
    report.pending += registry.pending
    done = erasures.complete(bucket, asked, stores, requested_by=requested_by)
    report.completed_seq = done.seq
    log.info("erasure request %d completed (entry %d): %s", asked.seq, done.seq, stores)
    return report


def _holds(snap: Snapshot, forms: list[str]) -> bool:
    value_set = pa.array(forms, pa.string())
    for table, column in USER_TABLES.items():
        if not snap.has(table) or not snap.manifest["tables"][table]["rows"]:
            continue
        ids = pq.read_table(snap.path / TABLES[table].file, columns=[column]).column(column)
        if pc.any(pc.is_in(ids, value_set=value_set)).as_py():
            return True
    return False


def snapshot_folders(settings: Settings) -> Iterator[Path]:
    root = settings.snapshots_dir
    if root.is_dir():
        for manifest in sorted(root.rglob(MANIFEST)):
            if (manifest.parent / TABLES["users"].file).is_file():
                yield manifest.parent


def _snapshots(
    settings: Settings, forms: list[str], privacy: Privacy, seq: int, report: ForgetReport
) -> int:
    removed = 0
    for folder in snapshot_folders(settings):
        snap = Snapshot.open(folder)
        if not _holds(snap, forms):
            continue
        validated = read_status(snap) is not None
        before = dict(snap.manifest["row_counts"])
        producer = {**snap.manifest["producer"], "erasure": {"request": seq, "replaces": snap.id}}
        privacy.counts.clear()
        with write_snapshot(
            folder,
            source=snap.manifest["source"],
            producer=producer,
            overwrite=True,
            notes=list(snap.manifest.get("notes", [])),
            privacy=privacy,
        ) as w:
            for name in TABLES:
                if snap.has(name):
                    w.write_table(name, snap.read(name), allow_empty=True)
        new = Snapshot.open(folder)
        removed += sum(before.values()) - sum(new.manifest["row_counts"].values())
        report.rewritten[str(folder)] = new.id
        log.info("snapshot %s rewritten: %s -> %s", folder, snap.id[:12], new.id[:12])
        if validated:
            report.revalidated[str(folder)] = validate_snapshot(snapshot_uri=folder).accepted
    return removed


def _traced(folder: Path, forms: list[str]) -> bool:
    return any(
        scan_file(p, forms).traces for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
    )


def _runs(settings: Settings, forms: list[str], report: ForgetReport) -> int:
    uri = urlparse(settings.work_uri)
    if uri.scheme != "file":
        try:
            return _remote_runs(open_bucket(settings.work_uri, settings.s3_endpoint_url), forms)
        except Exception as exc:  # the store failing: said, and the other stores go on
            report.pending.append(
                f"retrain runs in {settings.work_uri}: not searched ({first_line(exc)})"
            )
            return 0
    root = Path(unquote(uri.path))
    gone = 0
    for run in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        if _traced(run, forms):
            shutil.rmtree(run)
            gone += 1
    return gone


def _remote_runs(work: Bucket, forms: list[str]) -> int:
    """Runs in a remote work storage (``s3://``) holding the shoppers: every object of the
    run removed. Each object is read once (the search is the audit's)."""
    runs: dict[str, list[str]] = {}
    for key in work.keys(""):
        runs.setdefault(key.split("/", 1)[0], []).append(key)
    gone = 0
    with tempfile.TemporaryDirectory(prefix="shopml-forget-") as tmp:
        for run, keys in sorted(runs.items()):
            traced = False
            for key in keys:
                local = Path(tmp) / key  # the name tells the scan the file's kind
                found = work.get_file(key, local) and scan_file(local, forms).traces
                local.unlink(missing_ok=True)
                if found:
                    traced = True
                    break
            if traced:
                for key in keys:
                    work.delete(key)
                gone += 1
                log.info("retrain run %s removed from %s", run, work.uri)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spool(folder: Path, forms: list[str], report: ForgetReport) -> int:
    if not folder.is_dir():
        return 0
    files = sorted(p for p in folder.iterdir() if _SPOOL.match(p.name))
    newest: dict[int, Path] = {}
    for p in files:
        m = _SPOOL.match(p.name)
        assert m is not None
        newest[int(m.group(1))] = p  # names sort by time within a process
    lines = 0
    for p in files:
        if not scan_file(p, forms).traces:
            continue
        pid = int(_SPOOL.match(p.name).group(1))  # type: ignore[union-attr]
        if newest.get(pid) == p and _alive(pid):
            report.pending.append(
                f"{p}: still being written by serving process {pid}; forget again once it "
                "has moved to a new file"
            )
            continue
        lines += scrub_file(p, forms)
    return lines


def _under(path: Path, root: Path, parts: tuple[str, ...]) -> bool:
    return any(path.is_relative_to(root / p) for p in parts)


def _home(settings: Settings, forms: list[str], report: ForgetReport) -> tuple[int, int]:
    """Text traces under SHOPML_HOME replaced; search models and evaluation folders that
    hold the shoppers removed; anything else reported as pending."""
    home = settings.home
    handled = [
        settings.snapshots_dir, settings.feature_store_dir, settings.serving_events_dir,
        settings.privacy_key_file.parent,
    ]  # fmt: skip
    uri = urlparse(settings.work_uri)
    if uri.scheme == "file":
        handled.append(Path(unquote(uri.path)))
    words = removed = 0
    if not home.is_dir():
        return 0, 0
    for top in _REMOVABLE:
        for folder in sorted(p for p in (home / top).glob("*") if p.is_dir()):
            if _traced(folder, forms):
                shutil.rmtree(folder)
                removed += 1
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if _under(path, home, _NOT_TEXT) or any(path.is_relative_to(h) for h in handled):
            continue
        found = scan_file(path, forms)
        if not found.traces:
            continue
        n = scrub_file(path, forms)
        if n:
            words += n
        else:
            report.pending.append(
                f"{path}: {found.traces} trace(s) in a file forget cannot rewrite"
            )
    return words, removed
