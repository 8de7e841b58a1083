#!/usr/bin/env bash
# Bring animatch's dependencies to a GPU machine without internet: download their wheels here, carry the folder.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash bench/gpu_wheels.sh [--dest DIR] [--python-version 3.12] [--exclude "NAME ..."]

Run on a machine with internet (PyPI) and the project installed (`make install`). Lists every package
that animatch and its judge, serve and dev extras need, transitively, except torch and what torch itself
needs (the GPU machine has its own CUDA torch), at the versions installed here (the tested set), and
downloads their wheels for Linux x86-64 and CPython --python-version (the GPU machine's) into DIR
(default .whl). Carry DIR to the GPU machine next to the repo; `bash bench/gpu_check.sh --wheels DIR`
installs them with `pip install --no-index` into /tmp/animatch-site, leaving the system's packages alone.
--exclude leaves out packages the GPU machine already has at a suitable version (to carry less).
EOF
}

DEST=.whl PYVER=3.12 EXCLUDE=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dest) DEST="$2"; shift ;;
    --python-version) PYVER="$2"; shift ;;
    --exclude) EXCLUDE="$2"; shift ;;
    *) echo "gpu_wheels.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

pins=$(EXCLUDE="$EXCLUDE" PYVER="$PYVER" "$PYTHON" - <<'EOF'
import os
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Linux x86-64 and the GPU machine's Python; each requirement's extras are evaluated.
ENV = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "python_version": os.environ["PYVER"], "implementation_name": "cpython"}
SKIP = {"ruff", "selenium"} | {canonicalize_name(n) for n in os.environ["EXCLUDE"].split()}  # no lint, no browser


def wanted(requirements):
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({**ENV, "extra": ""}):
            yield canonicalize_name(req.name)


def closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in SKIP:
            continue
        try:
            todo += wanted(distribution(name).requires or [])
        except PackageNotFoundError:
            raise SystemExit(f"gpu_wheels.sh: {name} is not installed here: run make install first") from None
        seen.add(name)
    return seen


project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
roots = [*project["dependencies"], *extras["judge"], *extras["serve"], *extras["dev"]]
ours = closure(wanted(roots)) - closure(["torch"])  # the GPU machine has its own CUDA torch and torch's needs
print(" ".join(sorted(f"{n}=={distribution(n).version}" for n in ours)))
EOF
)
echo "gpu_wheels.sh: $(echo "$pins" | wc -w) packages -> $DEST"
mkdir -p "$DEST"
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" $pins
du -sh "$DEST"
