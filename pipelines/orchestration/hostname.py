"""Airflow's ``[core] hostname_callable`` for the workers of ``shopml stack up``: the
worker's name and the machine's, so two workers on one machine record different hosts for
the tasks they run (Airflow's default, ``getfqdn``, cannot tell them apart). Kept free of
imports: every Airflow process loads it."""

import os
import socket

WORKER_ENV = "SHOPML_STACK_WORKER"  # the worker's name, set in its environment


def worker_hostname() -> str:
    name = os.environ.get(WORKER_ENV)
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()
