"""The package and the native library carry one version: the crate's."""

import re
from pathlib import Path

import flowmesh
from flowmesh import FlowMesh


def test_version_is_the_crates_and_the_librarys() -> None:
    manifest = (Path(__file__).resolve().parents[3] / "Cargo.toml").read_text()
    crate = re.search(r'^version\s*=\s*"([^"]+)"', manifest, re.M)
    assert crate is not None
    assert flowmesh.__version__ == crate.group(1)
    assert FlowMesh.native_version() == flowmesh.__version__


def test_package_is_typed() -> None:
    assert (Path(flowmesh.__file__).parent / "py.typed").is_file()
