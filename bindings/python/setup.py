"""Build hook: put libflowmesh.so inside the package, version it like the crate.

Metadata lives in pyproject.toml; the version is the crate's (the [package]
table of Cargo.toml), read here at build time. The crate is the repository
this directory sits in, or, in an sdist, the copy under native/.

The library is taken from FLOWMESH_LIB if set (it must name a file), else
built with `cargo build --release --lib` and taken from cargo's target
directory (as `cargo metadata` reports it, so CARGO_TARGET_DIR is honoured).
FLOWMESH_NO_CARGO=1 never runs cargo: then a library already built there is
used. When no library can be found the build fails: a package without its
library would only fail at run time.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Tuple

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
LIB = "libflowmesh.so"
# What an sdist carries of the crate so that `pip install flowmesh-X.tar.gz`
# can build the library with cargo.
# (The broker's console embeds the browser client of bindings/web.)
CRATE_FILES = ["Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml", "flowmesh.map",
               "bindings/web/flowmesh.js", "bindings/web/flowmesh.d.ts"]
CRATE_DIRS = ["src", "proto", "include"]


def _crate() -> Path:
    for candidate in (HERE / "native", HERE.parent.parent):
        if (candidate / "Cargo.toml").is_file() and (candidate / "build.rs").is_file():
            return candidate
    raise SystemExit(
        "flowmesh: the Rust crate is missing (neither native/ nor ../../Cargo.toml): "
        "build from a flowmesh checkout or from the sdist"
    )


def _version() -> str:
    manifest = (_crate() / "Cargo.toml").read_text(encoding="utf-8")
    table = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", manifest, re.M | re.S)
    found = re.search(r'^version\s*=\s*"([0-9]+\.[0-9]+\.[0-9]+[^"]*)"', table.group(1) if table else "", re.M)
    if not found:
        raise SystemExit("flowmesh: no version in the [package] table of Cargo.toml")
    return found.group(1)


def _target_dir(crate: Path) -> Path:
    if shutil.which("cargo"):
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            cwd=crate, check=True, capture_output=True, text=True,
        ).stdout
        return Path(json.loads(out)["target_directory"])
    env = os.environ.get("CARGO_TARGET_DIR")
    return Path(env) if env else crate / "target"


def _library() -> Path:
    env = os.environ.get("FLOWMESH_LIB")
    if env:
        if not Path(env).is_file():
            raise SystemExit(f"flowmesh: FLOWMESH_LIB={env!r} does not name a file")
        return Path(env)
    crate = _crate()
    if not os.environ.get("FLOWMESH_NO_CARGO"):
        if shutil.which("cargo") is None:
            raise SystemExit(
                "flowmesh: building from source needs cargo (https://rustup.rs), "
                f"or FLOWMESH_LIB naming a built {LIB}"
            )
        print("flowmesh: building the native library with cargo build --release --lib")
        subprocess.run(["cargo", "build", "--release", "--lib"], cwd=crate, check=True)
    built = _target_dir(crate) / "release" / LIB
    if not built.is_file():
        raise SystemExit(f"flowmesh: {built} is missing after the build: cannot bundle the library")
    return built


def _strip(lib: Path) -> None:
    """Drops the debug sections (the release build keeps line tables for
    profiling): a quarter of the size. FLOWMESH_STRIP=0 keeps them."""
    if os.environ.get("FLOWMESH_STRIP", "1") == "0" or shutil.which("strip") is None:
        return
    subprocess.run(["strip", "--strip-debug", str(lib)], check=True)


class BuildPyWithNative(build_py):
    def run(self) -> None:
        super().run()
        package = Path(self.build_lib) / "flowmesh"
        target = package / "_native"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_library(), target / LIB)
        _strip(target / LIB)
        (package / "VERSION").write_text(_version() + "\n", encoding="utf-8")


class SdistWithCrate(sdist):
    """The sdist carries the crate under native/, so it builds anywhere cargo runs."""

    def make_release_tree(self, base_dir: str, files: List[str]) -> None:
        super().make_release_tree(base_dir, files)
        if (HERE / "native").is_dir():
            return  # building an sdist from an sdist: native/ is in `files` already
        crate = HERE.parent.parent
        dest = Path(base_dir) / "native"
        for name in CRATE_FILES:
            if (crate / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(crate / name, dest / name)
        for name in CRATE_DIRS:
            shutil.copytree(crate / name, dest / name)


class BinaryDistribution(Distribution):
    # The wheel carries a native library: install it as platform code.
    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """One wheel for every Python 3: the library is loaded with ctypes, not
    as an extension module, so only the platform matters."""

    def get_tag(self) -> Tuple[str, str, str]:
        plat = super().get_tag()[2]
        return "py3", "none", plat


setup(
    version=_version(),
    cmdclass={"build_py": BuildPyWithNative, "sdist": SdistWithCrate, "bdist_wheel": PlatformWheel},
    distclass=BinaryDistribution,
)
