"""The package version: the crate's (Cargo.toml), stamped into built packages
as flowmesh/VERSION by setup.py; a source checkout reads Cargo.toml itself."""

import re
from pathlib import Path


def read_version() -> str:
    here = Path(__file__).resolve().parent
    stamped = here / "VERSION"
    if stamped.is_file():
        return stamped.read_text(encoding="utf-8").strip()
    manifest = here.parent.parent.parent / "Cargo.toml"  # bindings/python/flowmesh -> root
    if manifest.is_file():
        text = manifest.read_text(encoding="utf-8")
        table = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        found = re.search(r'^version\s*=\s*"([^"]+)"', table.group(1) if table else "", re.M)
        if found:
            return found.group(1)
    return "0+unknown"
