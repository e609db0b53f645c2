"""Peak memory of decoding one large image down to the model's input size (issue 9, item 8).

    python -m benchmarks.decode                      # 12000 x 12000 PNG (L, RGB, RGBA) and JPEG
    python -m benchmarks.decode --size 6000 --out /tmp/decode.json

Each measurement is a fresh Python process that imports NumPy, Pillow and semhash.data and
then decodes one file (or nothing, for the baseline) and reports its own peak resident set
size (``VmHWM`` in /proc/self/status, Linux; Pillow allocates its pixels with malloc, which
tracemalloc does not see).  Two methods:

* ``decode_image``: semhash.data.decode_image as it is now;
* ``full_size``: the pre-issue-9 path, kept here as the reference: load at full size,
  ``ImageOps.exif_transpose`` (a full-size copy even when there is nothing to rotate),
  convert to L/RGB at full size, then one Lanczos resize.

Writes docs/benchmarks/decode_memory.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "decode_memory.json"

# The child process: import what decoding needs, then decode (or not) and report the time.
CHILD = r"""
import sys, time, warnings
import numpy as np
from PIL import Image, ImageOps
from semhash.data import decode_image, _to_mode
warnings.simplefilter("ignore")
method, path, h, w, c = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])

def full_size(path, shape):
    height, width, channels = shape
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _to_mode(img, "L" if channels == 1 else "RGB")
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.float32) / 255.0

started = time.perf_counter()
if method == "decode_image":
    arr = decode_image(path, (h, w, c))
elif method == "full_size":
    arr = full_size(path, (h, w, c))
seconds = time.perf_counter() - started
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(f"{seconds:.3f} {int(hwm) / 1024:.1f}")
"""

METHODS = ("decode_image", "full_size")


def make_images(folder: Path, size: int) -> dict[str, Path]:
    """Smooth test pictures of size x size pixels (kept small on disk: gradients)."""
    from PIL import Image

    gradient = Image.linear_gradient("L").resize((size, size))
    rgb = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    )
    images = {}
    for name, img, suffix, options in (
        ("png-L", gradient, ".png", {"compress_level": 1}),
        ("png-RGB", rgb, ".png", {"compress_level": 1}),
        ("png-RGBA", None, ".png", {"compress_level": 1}),
        ("jpeg-RGB", rgb, ".jpg", {"quality": 90}),
    ):
        if img is None:
            img = rgb.copy()
            img.putalpha(gradient)
        path = folder / f"{name}-{size}{suffix}"
        img.save(path, **options)
        images[name] = path
        del img
    return images


def peak_rss_mb(method: str, path: str, shape: tuple[int, int, int]) -> tuple[float, float | None]:
    """(peak RSS in MB, decode seconds) of one child process."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, method, path, *map(str, shape)], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"{method} on {path} failed:\n{proc.stderr}")
    seconds, peak = (float(v) for v in proc.stdout.split())
    return peak, (seconds if method in METHODS else None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=12000, help="side of the square test images [12000]")
    parser.add_argument("--shape", default="28,28,1", help="target H,W,C [28,28,1]")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), args.size)
        baseline, _ = peak_rss_mb("none", str(next(iter(images.values()))), shape)
        print(f"baseline (imports only): {baseline:.0f} MB")
        results = []
        for name, path in images.items():
            for method in METHODS:
                peak, seconds = peak_rss_mb(method, str(path), shape)
                row = {
                    "image": name,
                    "pixels": args.size * args.size,
                    "file_mb": round(path.stat().st_size / 2**20, 1),
                    "method": method,
                    "peak_rss_mb": round(peak, 1),
                    "peak_above_baseline_mb": round(peak - baseline, 1),
                    "seconds": seconds,
                }
                results.append(row)
                print(f"{name:9s} {method:13s} peak {peak:7.0f} MB (+{peak - baseline:6.0f} over imports)  {seconds:.2f} s", flush=True)
    doc = {
        "benchmark": "decode",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.decode " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"},
        "settings": {"size": args.size, "shape": list(shape)},
        "baseline_rss_mb": round(baseline, 1),
        "results": results,
        "seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
