# One image for every process of the system (the command differs per service).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --no-create-home app \
    && mkdir /gateway \
    && chown app /app /gateway  # Faust's table data in ./<app id>-data; the gateway's config
USER app

EXPOSE 8000 8001 8002 8003 8004 8080
CMD ["cqrs", "--help"]
