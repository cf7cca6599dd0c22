#!/usr/bin/env bash
# Collects the wheels a lent GPU machine lacks for memloss into DIR (default .whl, ignored by git), at most 60 MiB.
#
#   scripts/device_kit.sh [DIR]
#
# The GPU machines' image (Python 3.12, torch 2.11.0+cu130 and torchvision 0.26 preinstalled, no network) already has
# numpy, torch, torchvision, typer, rich, safetensors, matplotlib, scikit-learn, psutil, tensorboard, fsspec, pytest,
# hypothesis and pyyaml. The kit brings, as cp312 manylinux wheels (pip download --only-binary, no dependencies):
#   zarr, numcodecs, google-crc32c, donfig, zarrs   the memory store
#   pyautoattack                                    AutoAttack; repacked without its 44.7 MB example checkpoint
#                                                   (pyautoattack/examples/model_test.pt, never imported), RECORD rewritten
#   memloss                                         this tree, built with `pip wheel --no-deps .`
# at the versions this checkout's .venv holds (CI's), so the GPU check runs what CI tested. Left out on purpose:
#   ffcv      no wheel exists (sdist only) and a built one needs libopencv/libturbojpeg, which the image lacks:
#             memloss then uses its loader without FFCV (docs/guide.md)
#   s3fs      S3 stores only (and it pins fsspec to its own version, which would replace the image's); the GPU check
#             uses local stores
#   robustbench, moto   test extras of the CPU suite; the gpu-marked tests need neither
# Prints the kit's size and fails (exit 1) if it is over 60 MiB. Writes DIR/KIT.txt (commit, versions, size).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
LIMIT=$((60 * 1024 * 1024))
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PACKAGES=(zarr numcodecs google-crc32c donfig zarrs pyautoattack)

version_of() {  # the version CI's environment holds
  "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null \
    || { echo "device_kit: $1 is not installed in $PY's environment; run scripts/setup.sh first" >&2; exit 1; }
}

rm -rf "$DIR"
mkdir -p "$DIR"
PINS=()
for p in "${PACKAGES[@]}"; do PINS+=("$p==$(version_of "$p")"); done
echo "device_kit: downloading ${PINS[*]} (cp312, manylinux x86_64)"
# pip matches each manylinux_2_N tag exactly: list the ones these packages publish.
PLATFORMS=()
for n in 17 27 28 31 34 35; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DIR" "${PINS[@]}"

# pyautoattack without its example checkpoint: drop the file and its RECORD line; every other file and hash stays.
"$PY" - "$DIR" <<'EOF'
import pathlib, sys, zipfile
whl = next(pathlib.Path(sys.argv[1]).glob("pyautoattack-*.whl"))
tmp = whl.with_suffix(".tmp")
drop = lambda name: name.endswith(".pt")
with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    dropped = [i.filename for i in src.infolist() if drop(i.filename)]
    for info in src.infolist():
        if drop(info.filename):
            continue
        data = src.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = ("\n".join(l for l in lines if not drop(l.split(",")[0])) + "\n").encode()
        dst.writestr(info, data)
tmp.replace(whl)
size = whl.stat().st_size / 2**20
print(f"device_kit: repacked {whl.name} without {', '.join(dropped) or 'nothing'} ({size:.1f} MiB)")
EOF

echo "device_kit: building the memloss wheel from this tree"
BUILD=$(mktemp -d)
"$PY" -m pip wheel -q --no-deps -w "$DIR" . 2>"$BUILD/log" || { cat "$BUILD/log" >&2; exit 1; }
rm -rf "$BUILD" build

SIZE=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
{
  echo "tree: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "made: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "size: $SIZE bytes"
  (cd "$DIR" && ls -l --block-size=K *.whl | awk '{print "wheel: " $NF " " $5}')
} > "$DIR/KIT.txt"
printf 'device_kit: %d wheels, %.1f MiB in %s (limit 60 MiB)\n' "$(ls "$DIR"/*.whl | wc -l)" \
  "$(echo "$SIZE / 1048576" | bc -l)" "$DIR"
if [ "$SIZE" -gt "$LIMIT" ]; then
  echo "device_kit: ERROR: the kit is $SIZE bytes, over the 60 MiB a device call may carry" >&2
  exit 1
fi
