"""Shoppers' ids as ShopML stores them: keyed pseudonyms, erased ids kept out, and no
direct identifiers (docs/privacy.md).

- **Pseudonyms**: with ``pseudonymise`` on, every ``user_id`` an import writes is replaced
  by ``p_`` + HMAC-SHA256(privacy key, id) (32 hex digits). The key lives in
  ``settings.privacy_key_file`` (0600, created on first use), never in a snapshot, a
  manifest or a log; the same key gives the same pseudonym on every import, so history
  still joins, and the serving API maps incoming ids the same way. A value that already is
  a pseudonym is kept (the serving events log holds pseudonyms already).
- **Erased ids**: ``shopml privacy forget`` records each erased shopper only as a keyed
  hash of the stored id (:func:`erasure_hash`, a different HMAC domain than the pseudonym);
  every import drops the rows of those hashes, so a re-import of an old export does not
  bring a forgotten shopper back.
- **Direct identifiers**: source columns named like an e-mail, phone, name, address, ...
  are refused unless a mapping declares them dropped, and values that look like e-mail
  addresses or phone numbers are refused in any per-shopper column (named by file, row and
  column; the value itself is never printed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import ConfigError, ContractError
from pipelines.keys import create_secret, read_secret
from pipelines.settings import Settings

PREFIX = "p_"  # a shopper's pseudonym
SESSION_PREFIX = "s_"  # a session's (sources often build session ids from the shopper's id)
_PSEUDONYM = re.compile(r"^[ps]_[0-9a-f]{32}$")
# the tables that hold a shopper's id, and the column that holds it
USER_TABLES: dict[str, str] = {"users": "user_id", "events": "user_id", "queries": "user_id"}
# Source column names that are direct identifiers of a person (compared without case,
# spaces, dashes and underscores). Product tables may have names: only per-shopper
# tables are checked.
_IDENTIFIER_NAMES = {
    "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "mobilephone", "tel",
    "telephone", "cell", "name", "fullname", "firstname", "lastname", "surname",
    "givenname", "familyname", "customername", "username", "address", "streetaddress",
    "street", "homeaddress", "billingaddress", "shippingaddress", "address1", "address2",
    "addressline1", "addressline2", "ip", "ipaddress", "ssn", "socialsecuritynumber",
    "passport", "passportnumber", "nationalid", "taxid", "dateofbirth", "birthdate", "dob",
    "creditcard", "cardnumber", "iban",
}  # fmt: skip
_EMAIL_RE = r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"
# a phone number as people write it, 8-15 digits: international (+49 170 1234567) or an
# area code and groups ((030) 1234-5678); a bare run of digits is an ordinary numeric id and
# a date (2017-11-01) is not a phone number
_PHONE_RE = (
    r"(?=(?:\D*\d){8,15}\D*$)(?:\+[\d\s().-]+|\(?\d{2,5}\)?[\s.-]\d{3,4}(?:[\s.-]?\d{2,5})+)"
)
_EMAIL = re.compile(rf"^{_EMAIL_RE}$")
_PHONE = re.compile(rf"^{_PHONE_RE}$")
# either, for a vectorised match over a column (pandas ``str.match``)
CONTACT_PATTERN = rf"^\s*(?:{_EMAIL_RE}|{_PHONE_RE})\s*$"


def privacy_key(settings: Settings, *, create: bool = False) -> bytes:
    """The key of pseudonyms and erasure hashes (``settings.privacy_key_file``); with
    ``create``, a new random key is written there (0600) when there is none yet."""
    path = settings.privacy_key_file
    if not path.is_file():
        if not create:
            raise ConfigError(
                f"no privacy key at {path}: pseudonyms and erasures need the key the shop's "
                "data was imported with (SHOPML_PRIVACY_KEY_FILE)"
            )
        create_secret(path)
    return read_secret(path, "anyone who reads the privacy key can link pseudonyms to shoppers")


def pseudonym(user_id: str, key: bytes, *, prefix: str = PREFIX) -> str:
    """The stored id of a shopper whose id in the shop is ``user_id`` (idempotent);
    ``prefix=SESSION_PREFIX`` for a session id."""
    if _PSEUDONYM.match(user_id):
        return user_id
    domain = b"pseudonym\0" if prefix == PREFIX else prefix.encode() + b"\0"
    return prefix + hmac.new(key, domain + user_id.encode(), hashlib.sha256).hexdigest()[:32]


def erasure_hash(stored_id: str, key: bytes) -> str:
    """How the erasure ledger and list name a shopper: a keyed hash of the stored id."""
    return hmac.new(key, b"erasure\0" + stored_id.encode(), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A short name of the key (says whether two imports used the same one; reveals
    nothing of it)."""
    return hmac.new(key, b"fingerprint", hashlib.sha256).hexdigest()[:12]


def _mapped(
    values: pa.ChunkedArray | pa.Array, fn: dict[str, str], key: bytes, prefix: str = PREFIX
) -> pa.Array:
    """``values`` (strings, maybe null) through :func:`pseudonym`, each distinct id once."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    codes = pc.dictionary_encode(arr)
    uniques = codes.dictionary.to_pylist()
    out = []
    for u in uniques:
        if u not in fn:
            fn[u] = pseudonym(u, key, prefix=prefix)
        out.append(fn[u])
    mapped = pa.array(out, type=pa.string()) if out else pa.array([], type=pa.string())
    return pc.take(mapped, codes.indices)


@dataclass
class Privacy:
    """What an import does to shoppers' ids before a table is written: pseudonymise them
    (with ``pseudonymise``) and drop the rows of erased shoppers (``erased``: their
    :func:`erasure_hash` values). ``counts`` says what it did, for the manifest's notes."""

    key: bytes | None
    pseudonymise: bool = False
    erased: frozenset[str] = frozenset()
    counts: dict[str, int] = field(default_factory=dict)
    _pseudonyms: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.key is None and (self.pseudonymise or self.erased):
            raise ConfigError("pseudonyms and erasures need the privacy key")

    def protect(self, table: str, data: pa.Table) -> pa.Table:
        column = USER_TABLES.get(table)
        if column is None or column not in data.column_names or self.key is None:
            return data
        ids = data.column(column)
        if self.pseudonymise:
            data = data.set_column(
                data.column_names.index(column), column, _mapped(ids, self._pseudonyms, self.key)
            )
            ids = data.column(column)
            self.counts[f"{table}_pseudonymised"] = data.num_rows - ids.null_count
            if "session_id" in data.column_names:
                sessions = _mapped(data.column("session_id"), {}, self.key, SESSION_PREFIX)
                data = data.set_column(
                    data.column_names.index("session_id"), "session_id", sessions
                )
        if self.erased:
            keep = self.keep_mask(ids)
            dropped = int((~keep).sum())
            if dropped:
                data = data.filter(pa.array(keep))
            self.counts[f"{table}_erased_rows"] = dropped
        return data

    def keep_mask(self, ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """False where a row's stored id is an erased shopper's (nulls are kept)."""
        assert self.key is not None
        arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        codes = pc.dictionary_encode(arr)
        gone = np.array(
            [erasure_hash(u, self.key) in self.erased for u in codes.dictionary.to_pylist()],
            dtype=bool,
        )
        idx = codes.indices.to_numpy(zero_copy_only=False)
        valid = ~np.asarray(pc.is_null(codes.indices).to_numpy(zero_copy_only=False), dtype=bool)
        keep = np.ones(len(arr), dtype=bool)
        keep[valid] = ~gone[idx[valid].astype(np.int64)] if len(gone) else True
        return keep

    def notes(self) -> list[str]:
        """The manifest's lines about what was done (never an id, never the key)."""
        out = []
        if self.pseudonymise and self.key is not None:
            rows = sum(v for k, v in self.counts.items() if k.endswith("_pseudonymised"))
            out.append(
                f"privacy: user and session ids pseudonymised in {rows:,} rows "
                f"(key {key_fingerprint(self.key)})"
            )
        dropped = {k[: -len("_erased_rows")]: v for k, v in self.counts.items() if k.endswith("_erased_rows") and v}  # fmt: skip
        if dropped:
            parts = ", ".join(f"{t} {n:,}" for t, n in dropped.items())
            out.append(f"privacy: rows of erased shoppers dropped ({parts})")
        return out


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).lower()


def is_identifier_name(name: str) -> bool:
    """Whether a source column's name says it holds a direct identifier of a person."""
    return _normal(name) in _IDENTIFIER_NAMES


def identifier_columns(names: Iterable[str]) -> list[str]:
    return [n for n in names if is_identifier_name(str(n))]


def looks_like_contact(value: str) -> str | None:
    """'an e-mail address' / 'a phone number' when ``value`` looks like one, else None."""
    v = value.strip()
    if _EMAIL.match(v):
        return "an e-mail address"
    if _PHONE.match(v):
        return "a phone number"
    return None


def check_no_contacts(
    values: Iterable[object], *, file: str, column: str, rows: Iterable[int] | None = None
) -> None:
    """Refuse a column with a value that looks like an e-mail address or a phone number,
    naming the file, the (1-based) row and the column, never the value."""
    numbers = iter(rows) if rows is not None else None
    for i, v in enumerate(values, start=1):
        row = next(numbers) if numbers is not None else i
        if not isinstance(v, str) or not v:
            continue
        kind = looks_like_contact(v)
        if kind:
            raise ContractError(
                file,
                f"holds what looks like {kind}: a direct identifier of a person may not be "
                "stored; map another column (user ids: or import with --pseudonymise)",
                row=row,
                column=column,
            )
