"""Promotion: the serving bucket, its layout (which serving reads too), the ledger, rollback.

May import: everything below it (``data`` to ``evaluation``).
"""
