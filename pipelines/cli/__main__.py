"""``python -m pipelines.cli``: the same as the ``shopml`` command."""

from pipelines.cli import main

main()
