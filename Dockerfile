FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY campaigns campaigns
COPY dialer dialer
COPY workers workers
RUN pip install --no-cache-dir ".[watch]"
ENV DIALER_DATABASE_URL=postgresql://dialer:dialer@postgres:5432/dialer \
    DIALER_REDIS_URL=redis://redis:6379/0
