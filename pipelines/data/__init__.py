"""The data stage: the contract, snapshots, the synthetic shop and the importers.

May import: ``pipelines`` base modules (settings, errors, io, progress) only.
"""
