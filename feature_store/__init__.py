"""ShopML's Feast feature repository.

Holds the declarative Feast objects (entities ``user`` and ``item``, the feature
views computed by ``pipelines.features`` and one feature service per model). It is
a package so that the definitions can be imported by the training steps and by
``feast apply`` alike. Its layout is described in docs/architecture.md.
"""
