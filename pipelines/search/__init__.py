"""Search: what matches a query in the catalog, for this shopper.

Lexical BM25 over the item's fields (:mod:`lexical`), cosine over a text embedding
(:mod:`semantic`), fused (:mod:`fusion`) after the query is corrected, expanded and
given a category intent (:mod:`query`); :mod:`engine` holds the index and the
never-empty fallback chain, :mod:`ranker` the LambdaMART re-ranker, :mod:`model`
a trained model (train, save, load, answer). docs/search.md describes all of it;
the offline comparison with BM25 is :mod:`pipelines.evaluation.search_benchmark`.
"""
