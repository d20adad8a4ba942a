"""Candidate generators: every source fits on a history and answers for a batch of users."""

from pipelines.candidates.als import ALSGenerator
from pipelines.candidates.base import Context, Generator, SideInfo, UserBatch
from pipelines.candidates.bpr import BPRGenerator
from pipelines.candidates.config import SOURCES, CandidateConfig
from pipelines.candidates.content import ContentGenerator
from pipelines.candidates.cooccur import CooccurGenerator
from pipelines.candidates.history import History
from pipelines.candidates.itemitem import ItemItemGenerator
from pipelines.candidates.popularity import PopularityGenerator, TrendingGenerator
from pipelines.candidates.repeat import RepeatGenerator

GENERATORS: dict[str, type[Generator]] = {
    g.name: g
    for g in (
        ALSGenerator,
        BPRGenerator,
        ItemItemGenerator,
        ContentGenerator,
        PopularityGenerator,
        TrendingGenerator,
        RepeatGenerator,
        CooccurGenerator,
    )
}
assert tuple(GENERATORS) == SOURCES

__all__ = [
    "GENERATORS",
    "SOURCES",
    "CandidateConfig",
    "Context",
    "Generator",
    "History",
    "SideInfo",
    "UserBatch",
]
