#!/usr/bin/env bash
# Freezes the exact versions the images install (images/constraints.txt) from the environment the test suite
# passes in: run after a dependency change in pyproject.toml, once `make test` is green.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Exact versions for the images, frozen from the environment the test suite passes in (.venv, every extra)."
  echo "# Regenerate with images/constraints.sh after a dependency change; tests/unit/test_images.py checks that the"
  echo "# pins still satisfy pyproject.toml."
  .venv/bin/python -m pip freeze --exclude-editable | sort -f
} > images/constraints.txt
echo "wrote images/constraints.txt ($(grep -c '==' images/constraints.txt) pins)"
