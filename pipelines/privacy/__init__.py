"""Shoppers' privacy across every store: the erasure ledger and list, ``shopml privacy
forget`` and ``shopml privacy audit`` (docs/privacy.md). Pseudonyms and the import-time
rules live with the data (:mod:`pipelines.data.privacy`)."""
