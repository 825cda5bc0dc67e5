# One image for every auxcord service (api, producers, streaming) and for Airflow's
# scheduler, dag-processor and api-server, which run auxcord's DAGs.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY auxcord auxcord
COPY cli cli
COPY devtools devtools
COPY producers producers
COPY streaming streaming
COPY analytics analytics
COPY api api
COPY dags dags
COPY templates templates
COPY static static
# Editable, so the web app finds templates/ and static/ next to its package, as in a checkout.
RUN pip install --no-cache-dir -e '.[deploy]'
# Nothing runs as root: a process that is broken into owns only its data directories.
RUN useradd --system --create-home auxcord \
 && mkdir -p /var/lib/auxcord /opt/airflow \
 && chown auxcord /var/lib/auxcord /opt/airflow
USER auxcord
ENV PYSPARK_PYTHON=python3
EXPOSE 8000
CMD ["auxcord", "serve", "--host", "0.0.0.0"]
