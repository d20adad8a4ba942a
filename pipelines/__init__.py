"""ShopML pipeline steps and the ``shopml`` command line.

Every step is a plain function that runs without Airflow; the DAGs in ``dags/`` only
wire them together.
"""

__version__ = "0.1.0"
