"""The MovieLens archives bstrec knows (names, URLs, published sizes and checksums) and
the marker of a complete unpacked data set: what the downloader and the loader share."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from bstrec.data.interactions import DataError

MARKER = ".bstrec.json"  # written last into an unpacked data set's folder


@dataclass(frozen=True)
class ArchiveSpec:
    name: str
    url: str
    size: int | None  # bytes, None where no trusted figure is known
    md5: str | None
    source: str  # where the figures come from


@cache
def known_archives() -> dict[str, ArchiveSpec]:
    raw = json.loads(resources.files("bstrec.data").joinpath("checksums.json").read_text())
    return {
        name: ArchiveSpec(name, v["url"], v["size"], v["md5"], v["source"])
        for name, v in raw.items()
        if not name.startswith("_")
    }


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def spec_for(name: str) -> ArchiveSpec:
    known = known_archives()
    if name not in known:
        raise DataError(f"{name}: unknown data set; known: {', '.join(known)}")
    return known[name]
