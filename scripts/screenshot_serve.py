"""The README's pictures of `semhash serve`: a real index, a real server, real headless Chromium.

    python scripts/screenshot_serve.py [--out docs/serve.png] [--work DIR] [--model itq]
    python scripts/screenshot_serve.py --review [--out docs/review.png]

``--review``: the review page instead: photos that installed packages ship (scikit-image,
scikit-learn), cut into tiles, some copied with the edits of ``semhash.edits``, indexed with
an ITQ model trained on them, served with ``semhash serve --review``, one group decided.

Builds a small real workspace with the CLI (mnist-5k's 4,000 database digits as PNGs, a model
trained on them -- ITQ by default, seconds and no TensorFlow; ``--model autoencoder`` for
the default kind -- the folder indexed, the model evaluated), starts ``semhash serve`` on
127.0.0.1, drops on the page the held-out digit (of ``--digit``) with the most matches, waits for its matches and the report, and
saves a full-page screenshot.  Everything stays on this machine; the server is always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def semhash(*args: str) -> None:
    print("$ semhash " + " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "semhash", *args], check=True, timeout=1800)


def build_workspace(work: Path, model: str) -> tuple[Path, Path]:
    home, images, queries = work / "ws", work / "images", work / "queries"
    if not (home / "index" / "index.sqlite").exists():
        semhash("export-dataset", "mnist-5k", str(images), "--part", "database")
        semhash("export-dataset", "mnist-5k", str(queries), "--part", "query")
        semhash("train", "mnist-5k", "--model", model, "--bits", "30", "--name", f"{model}-30", "--quiet", "--home", str(home))
        semhash("index", str(images), "--quiet", "--home", str(home))
        semhash("evaluate", "--home", str(home))
    return home, queries


def best_query(server_url: str, candidates: list[Path]) -> Path:
    """The candidate with the most indexed images within radius 2 (asked of the server, 16
    uploads a request), so the picture shows a full grid."""
    import httpx

    best: tuple[int, Path] = (-1, candidates[0])
    for start in range(0, len(candidates), 16):
        chunk = candidates[start : start + 16]
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in chunk]
        results = httpx.post(f"{server_url}/api/search/upload?radius=2&limit=1", files=files, timeout=60).json()
        best = max([best, *((r["total"], p) for r, p in zip(results, chunk))], key=lambda t: t[0])
    return best[1]


@contextlib.contextmanager
def served_page(home: Path, work: Path, *serve_args: str):
    """(server, page): a real `semhash serve` of ``home``'s index and a headless Chromium page."""
    from playwright.sync_api import sync_playwright

    from semhash.web.local_server import CHROMIUM_ARGS, LocalServer, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    index = home / "index" / "index.sqlite"
    with LocalServer(index, home, log_path=work / "serve.log", extra_args=list(serve_args)) as server, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(work / "chromium-profile"), executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": 1100, "height": 900}, device_scale_factor=1,
            bypass_csp=True,  # the script's own waits evaluate JavaScript; the page's CSP forbids that
        )
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield server, page
        finally:
            context.close()


def screenshot(home: Path, candidates: list[Path], out: Path, work: Path) -> None:
    from playwright.sync_api import expect

    with served_page(home, work) as (server, page):
        query = best_query(server.url, candidates)
        page.goto(server.url + "/")
        expect(page.locator("#summary")).to_contain_text("images")
        page.locator("#limit").fill("24")
        page.set_input_files("#file", str(query))
        expect(page.locator("#results .match").first).to_be_visible()
        expect(page.locator("#figures img").first).to_be_visible()
        page.wait_for_function("[...document.images].every((img) => img.complete)")
        page.evaluate("document.activeElement.blur()")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    print(f"wrote {out}", file=sys.stderr)


def build_photo_library(work: Path) -> Path:
    """Photo tiles and edited copies of some of them, indexed; -> the workspace."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from semhash.edits import edited_bytes

    home, photos = work / "ws", work / "photos"
    if (home / "index" / "index.sqlite").exists():
        return home
    import skimage.data as data

    sources = [np.asarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")]
    sources += list(load_sample_images().images)
    tiles = []
    for image in sources:
        for y in range(0, image.shape[0] - 200, 200):
            for x in range(0, image.shape[1] - 200, 200):
                tiles.append(Image.fromarray(image[y : y + 200, x : x + 200, :3]))
    for i, tile in enumerate(tiles):
        folder = photos / ("camera" if i % 2 else "phone")
        folder.mkdir(parents=True, exist_ok=True)
        tile.save(folder / f"IMG_{1000 + i}.png")
    edits = ("jpeg_q50", "resize_half", "gamma", "flip", "blur")
    for k, i in enumerate(range(0, len(tiles), 5)):
        copies = photos / "downloads"
        copies.mkdir(exist_ok=True)
        edit = edits[k % len(edits)]
        suffix = ".jpg" if edit == "jpeg_q50" else ".png"
        (copies / f"IMG_{1000 + i}-{edit}{suffix}").write_bytes(edited_bytes(tiles[i], edit))
    semhash("train", str(photos), "--model", "itq", "--bits", "16", "--image-size", "32", "--channels", "3",
            "--name", "itq-photos", "--quiet", "--home", str(home))  # fmt: skip
    semhash("index", str(photos), "--quiet", "--home", str(home))
    return home


def screenshot_review(home: Path, out: Path, work: Path) -> None:
    from playwright.sync_api import expect

    with served_page(home, work, "--review") as (server, page):
        page.goto(server.url + "/duplicates")
        groups = page.locator(".group-review")
        expect(groups.first).to_be_visible()
        undecided = page.locator(".group-review", has_text="Not decided yet")
        if undecided.count() > 1:  # one decision, to show what one looks like
            undecided.nth(1).get_by_role("button", name="Keep the suggested one").click()
            expect(page.locator(".decision", has_text="Decided: keep").first).to_be_visible()
        page.wait_for_function("[...document.images].every((img) => img.complete)")
        page.evaluate("document.activeElement.blur()")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1100, "height": 1400}, full_page=True)
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--review", action="store_true", help="The review page of a photo library with copies (docs/review.png).")
    parser.add_argument("--out", default=None, help="[docs/serve.png, or docs/review.png with --review]")
    parser.add_argument("--work", default=None, help="Folder for the workspace (reused when it holds an index).")
    parser.add_argument("--model", default="itq", help="Model kind to train [itq].")
    parser.add_argument("--digit", default="7", help="Drop the held-out image of this digit with the most matches [7].")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="semhash-screenshot-"))
    if args.review:
        screenshot_review(build_photo_library(work), Path(args.out or ROOT / "docs" / "review.png"), work)
        return
    args.out = args.out or str(ROOT / "docs" / "serve.png")
    home, queries = build_workspace(work, args.model)
    candidates = sorted((queries / args.digit).glob("*.png"))[:64] or sorted(queries.rglob("*.png"))[:64]
    screenshot(home, candidates, Path(args.out), work)


if __name__ == "__main__":
    main()
