"""Orchestration: the steps the Airflow DAGs run, the Airflow REST client, the embedded
stack and ``make demo``.

May import: everything below it. Only ``cli`` and the DAG files import it.
"""
