FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowapp ./flowapp
COPY handlers ./handlers
RUN pip install --no-cache-dir .

RUN useradd --system --uid 10001 flowapp
USER flowapp
EXPOSE 8000
ENV FLOWAPP_HOST=0.0.0.0 FLOWAPP_PORT=8000
CMD ["flowapp", "serve"]
