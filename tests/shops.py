"""Small generated shops and light training settings the training and evaluation tests share."""

from __future__ import annotations

from pipelines.candidates import CandidateConfig
from pipelines.data.generator import GeneratorConfig
from pipelines.features import FeatureConfig
from pipelines.recommender.config import RankerConfig, TrainConfig, TrainOptions

SHOP = GeneratorConfig(users=1_500, items=300, events=40_000, seed=11, days=45, judged_queries=20)
LIGHT = TrainConfig(
    train=TrainOptions(folds=1),
    candidates=CandidateConfig(als_iterations=5, bpr_iterations=10, threads=1),
    ranker=RankerConfig(
        label_days=7.0, max_rounds=60, early_stopping_rounds=20, min_data_in_leaf=20
    ),
    features=FeatureConfig(segment_k_min=2, segment_k_max=3),
)
