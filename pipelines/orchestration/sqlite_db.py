"""Connection arguments for the embedded profile's Airflow database (one SQLite file).

Every Airflow component of the embedded stack (API server, scheduler, DAG processor,
triggerer, the task processes) writes to the same SQLite file, and a writer waits for the
others' transactions to end. Python's sqlite3 gives up after 5 seconds ("database is
locked"); a busy machine reaches that, and the API server then answered 500 to a reviewer's
approval (seen in `make demo` on a loaded 2-core machine). Airflow imports these
dictionaries by name (``[database] sql_alchemy_connect_args`` and ``..._async``) in every
component; a writer now waits up to a minute.
"""

from __future__ import annotations

from typing import Any

LOCK_WAIT_SECONDS = 60.0

SYNC: dict[str, Any] = {"timeout": LOCK_WAIT_SECONDS}
ASYNC: dict[str, Any] = {"timeout": LOCK_WAIT_SECONDS}
