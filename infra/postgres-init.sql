-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d),
-- as POSTGRES_USER (airflow) connected to POSTGRES_DB (airflow), which the image created.
-- MLflow gets its own login and two databases: the tracking and model registry store
-- (mlflow) and the basic-auth users and permissions (mlflow_auth). The password comes
-- from the container's MLFLOW_DB_PASSWORD (psql's \getenv, PostgreSQL 15+).
\getenv mlflow_password MLFLOW_DB_PASSWORD
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
