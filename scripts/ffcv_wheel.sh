#!/usr/bin/env bash
# Builds a wheel of FFCV from its PyPI sdist (FFCV publishes no wheels) for one Python, against Debian's split OpenCV.
#
#   scripts/ffcv_wheel.sh PYTHON WORKDIR OUTDIR [VERSION]      e.g. scripts/ffcv_wheel.sh python3.13 /tmp/ffcv wheels
#
# Needs a C++ compiler, Python's headers, pkg-config, and Debian's libopencv-imgproc-dev and libturbojpeg0-dev (or
# libopencv-dev). FFCV's setup.py asks pkg-config for `opencv4`, whose .pc file only Debian's full libopencv-dev (about
# 640 MB) ships, and libffcv.cpp includes opencv2/opencv.hpp, which pulls in every OpenCV module; the extension uses
# only cv::Mat and cv::resize. So the build gets a two-line opencv.hpp and an opencv4.pc naming core and imgproc only
# (docs/guide.md, "Python 3.12 and 3.13"). Nothing in FFCV's own source is changed: 1.0.2 builds as it is on Python
# 3.13 (checked by scripts/check_python.sh 3.13).
# The sdist is fetched from PyPI's simple index and checked against the sha256 the index gives.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 PYTHON WORKDIR OUTDIR [VERSION]" >&2; exit 2; }
PY=$1; WORK=$2; OUT=$3; VERSION=${4:-1.0.2}
mkdir -p "$WORK" "$OUT"
WORK=$(cd "$WORK" && pwd); OUT=$(cd "$OUT" && pwd)
INDEX=${PIP_INDEX_URL:-https://pypi.org/simple}

"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip setuptools wheel

"$WORK/venv/bin/python" - "$INDEX/ffcv/" "ffcv-$VERSION.tar.gz" "$WORK" <<'EOF'
import hashlib, re, sys, urllib.parse, urllib.request
index, name, work = sys.argv[1:]
page = urllib.request.urlopen(index).read().decode()
hrefs = [h for h in re.findall(r'href="([^"]+)"', page) if h.split("#")[0].endswith("/" + name)]
if not hrefs:
    sys.exit(f"ffcv_wheel: {name} is not on {index}")
url, _, digest = hrefs[0].partition("#sha256=")
data = urllib.request.urlopen(urllib.parse.urljoin(index, url)).read()
if digest and hashlib.sha256(data).hexdigest() != digest:
    sys.exit(f"ffcv_wheel: {name}: sha256 mismatch")
open(f"{work}/{name}", "wb").write(data)
print(f"ffcv_wheel: fetched {name} (sha256 {hashlib.sha256(data).hexdigest()})")
EOF
rm -rf "$WORK/ffcv-$VERSION"
tar -xzf "$WORK/ffcv-$VERSION.tar.gz" -C "$WORK"

# pkg-config shim: core + imgproc only, when the full opencv4.pc is not installed.
if ! pkg-config --exists opencv4 2>/dev/null; then
  mkdir -p "$WORK/pc/include/opencv2"
  printf '#include "opencv2/core.hpp"\n#include "opencv2/imgproc.hpp"\n' > "$WORK/pc/include/opencv2/opencv.hpp"
  printf 'Name: opencv4\nDescription: OpenCV core and imgproc (what libffcv uses)\nVersion: 4\n' > "$WORK/pc/opencv4.pc"
  printf 'Libs: -lopencv_imgproc -lopencv_core\nCflags: -I%s -I/usr/include/opencv4\n' "$WORK/pc/include" \
    >> "$WORK/pc/opencv4.pc"
  export PKG_CONFIG_PATH=$WORK/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
fi
"$WORK/venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$WORK/ffcv-$VERSION"
ls "$OUT"/ffcv-"$VERSION"-*.whl
