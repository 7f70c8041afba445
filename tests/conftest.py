"""Shared test set-up: scripts/ on sys.path so tests can call each script's main()."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
