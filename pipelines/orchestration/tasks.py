"""How a DAG task runs a step: ShopML's own errors fail the task at once.

A :class:`~pipelines.errors.ShopMLError` is a verdict about the input (a quarantined or
missing snapshot, a refused promotion, a bad config): retrying gives the same answer and
only holds up the queue, so the task fails without retries and its log says why. A
:class:`~pipelines.errors.ServiceUnavailableError` or any other exception (a service down, a
worker lost) is left to the task's retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pipelines.errors import ServiceUnavailableError, ShopMLError

P = ParamSpec("P")
R = TypeVar("R")


def run_step(step: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return step(*args, **kwargs)
    except ServiceUnavailableError:
        raise
    except ShopMLError as exc:
        from airflow.sdk.exceptions import AirflowFailException  # only inside a task

        raise AirflowFailException(str(exc)) from exc
