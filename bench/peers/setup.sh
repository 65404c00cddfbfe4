#!/bin/sh
# Make var/peers-venv: the peers' packages (bench/peers/requirements.txt), apart from the
# product's .venv. bench/peers/run.py calls this when the venv is missing or out of date.
#
#     sh bench/peers/setup.sh              # PYTHON=python3.11 to choose the interpreter
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=var/peers-venv
mkdir -p var
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/peers/requirements.txt
cp bench/peers/requirements.txt "$VENV/installed-requirements.txt"
echo "$VENV: $("$VENV/bin/python" -m pip freeze --disable-pip-version-check | grep -iE '^(django|celery|celery-progress|django-eventstream|gunicorn|uvicorn)==' | tr '\n' ' ')"
