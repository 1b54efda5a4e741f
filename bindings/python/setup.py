"""Build hook: put libflowmesh.so inside the package.

Metadata lives in pyproject.toml. At build time the library is taken from
FLOWMESH_LIB, else from the repository's target/release, else built with
`cargo build --release` in the repository root (when this package sits in a
flowmesh checkout and cargo is installed). If none works the package still
installs and finds the library at run time via FLOWMESH_LIB (see README).
Set FLOWMESH_NO_CARGO=1 to never run cargo.
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LIB = "libflowmesh.so"


def _find_or_build() -> "Path | None":
    env = os.environ.get("FLOWMESH_LIB")
    if env and Path(env).is_file():
        return Path(env)
    built = REPO / "target" / "release" / LIB
    if built.is_file():
        return built
    if os.environ.get("FLOWMESH_NO_CARGO") or not (REPO / "Cargo.toml").is_file():
        return None
    if shutil.which("cargo") is None:
        return None
    print("flowmesh: building the native library with cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--lib"], cwd=REPO, check=True)
    return built if built.is_file() else None


class BuildPyWithNative(build_py):
    def run(self) -> None:
        super().run()
        lib = _find_or_build()
        if lib is None:
            print(f"flowmesh: {LIB} not found; set FLOWMESH_LIB at run time")
            return
        target = Path(self.build_lib) / "flowmesh" / "_native"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, target / LIB)


class BinaryDistribution(Distribution):
    # The wheel carries a native library: tag it for this platform.
    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildPyWithNative}, distclass=BinaryDistribution)
