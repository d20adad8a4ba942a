"""LightGBM LambdaMART, shared by every model that re-ranks candidates (recommendations,
search): fitting with early stopping, predicting, per-feature contributions and reasons in
words.

May import: base modules, ``data``.
"""
