#!/usr/bin/env python3
"""Build flowlayer.pyz: the server, the client and the runtime packages in one file that any
Python 3.11+ runs with nothing installed (stdlib zipapp).

    python tools/build_pyz.py [OUTPUT]        (default dist/flowlayer.pyz)

The packages of requirements.txt are copied, with their licences, from the Python that runs
this script (they are pure Python), so the build needs no network.
"""
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import zipapp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "dist", "flowlayer.pyz")


def requirements():
    """Distribution names listed in requirements.txt."""
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [re.match(r"[A-Za-z0-9._-]+", line).group() for line in lines if line]


def copy_distribution(name, stage):
    """Copy an installed distribution's files (package and .dist-info) into `stage`."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"Error: {name} is not installed in {sys.executable}: pip install -r requirements.txt")
    for file in dist.files or ():
        parts = file.parts
        if parts[0] == ".." or "__pycache__" in parts or "tests" in parts or file.suffix == ".pyc":
            continue  # scripts outside site-packages, caches, the package's own tests
        target = os.path.join(stage, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(dist.locate_file(file), target)
    return dist.version


def build(output):
    with tempfile.TemporaryDirectory() as stage:
        shutil.copytree(os.path.join(ROOT, "lib"), os.path.join(stage, "lib"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(os.path.join(ROOT, "tools", "pyz_main.py"), os.path.join(stage, "__main__.py"))
        shutil.copy2(os.path.join(ROOT, "LICENSE"), os.path.join(stage, "LICENSE"))
        versions = [f"{name} {copy_distribution(name, stage)}" for name in requirements()]
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        zipapp.create_archive(stage, output, interpreter="/usr/bin/env python3", compressed=True)
    size = os.path.getsize(output) // 1024
    print(f"built {output} ({size} KiB): lib, {', '.join(versions)}")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.exit(print(__doc__.strip()))
    if len(sys.argv) > 2:
        sys.exit(f"Error: one output path at most\n{__doc__.strip()}")
    build(sys.argv[1] if len(sys.argv) == 2 else DEFAULT_OUTPUT)
