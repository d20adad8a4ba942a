"""Progress lines and bars."""

from __future__ import annotations


def test_progress_shows_no_rate_before_a_second_has_passed() -> None:
    from pipelines.progress import rate_text

    assert rate_text(500, 1e-9, "users") == ""
    assert rate_text(500, 2.0, "users") == "250 users/s"
