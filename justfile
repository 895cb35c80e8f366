# Shortcuts; the README's commands work without `just`.

venv := ".venv/bin"

# install the project and its test tools into .venv
install:
    python3 -m venv .venv && {{venv}}/pip install -e ".[test]"

# the embedded default: SQLite + a bundled nats-server, on :8003
dev *ARGS:
    {{venv}}/notify dev {{ARGS}}

# the whole suite (PostgreSQL and SQLite when PostgreSQL answers)
test *ARGS:
    {{venv}}/python -m pytest {{ARGS}}

# ruff and mypy --strict
lint:
    {{venv}}/ruff check src tests bench
    {{venv}}/ruff format --check src tests bench
    {{venv}}/mypy src

# apply migrations to DATABASE_URL
migrate:
    {{venv}}/notify migrate

# REST create/list benchmark on PostgreSQL
bench-rest *ARGS:
    {{venv}}/python bench/rest.py {{ARGS}}

# Web Push: pushes/s of one worker against the local push peer
bench-push *ARGS:
    {{venv}}/python bench/push.py {{ARGS}}

# one digest tick for 100,000 users on PostgreSQL
bench-digest *ARGS:
    {{venv}}/python bench/digest.py {{ARGS}}

# WebSocket connect, fanout, latency and memory
bench-fanout *ARGS:
    {{venv}}/python bench/fanout.py {{ARGS}}
