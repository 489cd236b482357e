#!/usr/bin/env bash
# Rebuild what a device call carries, on a fresh checkout: .whl/ (every wheel named in wheels.txt, Python 3.12
# manylinux, no dependencies resolved: the list is the complete set known to work on the device image) and .gpu/
# (the call scripts and a frozen `git archive` copy of HEAD). Then: run with carry [".whl", ".gpu"], e.g.
# `LIMIT=585 bash .gpu/call5.sh`. Run from the repository root.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
mkdir -p .whl
# env.sh installs every wheel in .whl/: drop any a former wheels.txt listed (nltk, pytest) so none rides along
for f in .whl/*.whl; do
  [ -e "$f" ] && ! grep -qx "$(basename "$f")" bench/device/wheels.txt && rm -f "$f"
done
while read -r wheel; do
  [ -z "$wheel" ] && continue
  [ -f ".whl/$wheel" ] && continue
  name="${wheel%%-*}"
  version="$(echo "$wheel" | cut -d- -f2)"
  if [ "$name" = jieba ]; then  # no wheel on PyPI: build the pure-Python one from its sdist
    python3 -m pip wheel --quiet --no-deps -w .whl "jieba==$version"
    continue
  fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${name//_/-}==$version"
done < bench/device/wheels.txt
missing=0
while read -r wheel; do
  [ -n "$wheel" ] && [ ! -f ".whl/$wheel" ] && { echo "missing: .whl/$wheel"; missing=1; }
done < bench/device/wheels.txt
rm -rf .gpu && mkdir -p .gpu/src
cp bench/device/*.sh .gpu/
git archive HEAD | tar -x -C .gpu/src
git rev-parse --short HEAD > .gpu/src/COMMIT
du -sh .whl .gpu
exit "$missing"
