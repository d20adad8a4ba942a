"""Errors a user can hit. The CLI prints them as one message and exits with code 2."""

from __future__ import annotations


class ShopMLError(Exception):
    """Base class for every error ShopML reports to a person instead of a traceback."""


class ConfigError(ShopMLError):
    """A setting or a config file is missing or wrong."""


class ContractError(ShopMLError):
    """Input data breaks the data contract.

    Carries where the problem is, so the message reads like
    ``events.csv, row 17, column 'ts': 'yesterday' is not a timestamp``.
    ``row`` is the 1-based data row (the header is not counted); ``None`` when the
    problem is about the whole file or column.
    """

    def __init__(
        self, file: str, message: str, *, row: int | None = None, column: str | None = None
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.detail = message
        where = [file]
        if row is not None:
            where.append(f"row {row:,}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


class ServiceUnavailableError(ShopMLError):
    """A service (Airflow, MLflow, the bucket) could not be reached: trying again may help,
    unlike every other ShopMLError."""


class SnapshotError(ShopMLError):
    """A snapshot folder is missing, incomplete, altered or already exists."""


def require_all(
    checks: list[tuple[bool, str]], *, context: str = "", error: type[ShopMLError] = ConfigError
) -> None:
    """Raise ``error`` for the first ``(ok, message)`` that is not ok, its message prefixed
    with ``context`` (the configs' ``__post_init__`` checks)."""
    for ok, message in checks:
        if not ok:
            raise error(f"{context}: {message}" if context else message)
