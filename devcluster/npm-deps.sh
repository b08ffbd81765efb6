#!/usr/bin/env bash
# Installs the example app's npm dependencies (@libsql/client, pinned in
# examples/app/package-lock.json) once into a cache outside the repository, and links
# node_modules where the example app and the conformance test's Node client look for it.
# A second run with the same lock file finds everything in place and does nothing.
#
#   AUDIOJOB_CACHE   cache root (default ~/.cache/audiojob-operator)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${AUDIOJOB_CACHE:-$HOME/.cache/audiojob-operator}
LOCK=examples/app/package-lock.json
DEST=$CACHE/npm/$(sha1sum "$LOCK" | cut -c1-12)

if [[ ! -f $DEST/.installed ]]; then
  command -v npm >/dev/null || { echo "npm-deps: npm is needed (Node 20 or later)" >&2; exit 1; }
  echo "==> npm ci @libsql/client into $DEST"
  rm -rf "$DEST" && mkdir -p "$DEST"
  cp examples/app/package.json "$LOCK" "$DEST/"
  npm ci --prefix "$DEST" --no-audit --no-fund --loglevel=error
  touch "$DEST/.installed"
fi
for dir in examples/app tests/conformance; do
  [[ "$(readlink "$dir/node_modules" 2>/dev/null)" == "$DEST/node_modules" ]] ||
    ln -sfn "$DEST/node_modules" "$dir/node_modules"
done
