"""ShopML's serving API (FastAPI): recommendations, search and similar items,
answered from the model version the promotion ledger marks as current.

See docs/architecture.md for where it sits in the data flow.
"""
