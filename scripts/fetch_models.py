#!/usr/bin/env python3
"""Fetch the embedded default models into models/ (same as `fall-edge fetch-models`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["fetch-models", *sys.argv[1:]]))
