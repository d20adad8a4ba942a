"""The recommender: candidate rows and labels, two-stage training (candidate sources, then
the LambdaMART re-ranker), the served bundle and batch predict.

May import: base modules, ``data``, ``validation``, ``features``, ``candidates``, ``ranking``.
"""
