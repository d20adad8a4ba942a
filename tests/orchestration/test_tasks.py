"""A DAG task fails at once on ShopML's own errors and leaves the rest to its retries."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from pipelines.errors import ServiceUnavailableError, ShopMLError
from pipelines.orchestration.tasks import run_step


def _raise(exc: BaseException) -> None:
    raise exc


def test_a_verdict_about_the_input_fails_the_task_without_retries() -> None:
    with pytest.raises(AirflowFailException, match="snapshot /x is quarantined"):
        run_step(_raise, ShopMLError("snapshot /x is quarantined"))


@pytest.mark.parametrize(
    "exc", [ServiceUnavailableError("cannot reach Airflow"), OSError("disk full"), KeyError("k")]
)
def test_a_service_down_or_a_crash_is_left_to_the_retries(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as caught:
        run_step(_raise, exc)
    assert not isinstance(caught.value, AirflowFailException)


def test_a_step_returns_its_value() -> None:
    assert run_step(lambda a, b=0: a + b, 2, b=3) == 5
