"""MLflow: tracking runs, the model registry, the pyfunc wrapper, registering challengers.

May import: base modules, ``data`` to ``recommender``. Nothing that serves imports it.
"""
