"""What the benchmark scripts share: the real data folder and JSON-lines output."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(
    os.environ.get("BSTREC_ML1M_U2999", ROOT.parent / "shared" / "data" / "ml-1m-u2999")
)


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)
