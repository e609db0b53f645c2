"""End to end in a real browser: headless Chromium (Debian's, driven by Playwright) against a
real `semhash serve` subprocess on 127.0.0.1.

Skips only where Chromium is not installed, saying so; under CI (SEMHASH_CI=1, set by
.ci/run, which installs Chromium) a missing browser fails instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import add_model, write_digit_folder  # noqa: E402

from semhash.index import index_folder  # noqa: E402
from semhash.web.local_server import CHROMIUM_ARGS, LocalServer, find_chromium  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402

TIMEOUT_MS = 20_000


def chromium_or_skip() -> str:
    found = find_chromium()
    if found is None:
        reason = "Chromium is not installed (apt-get install chromium): the browser test cannot run"
        if os.environ.get("SEMHASH_CI") == "1":
            pytest.fail(reason + " -- and CI must not skip it")
        print(reason)
        pytest.skip(reason)
    return found


@contextlib.contextmanager
def browser(tmp_path: Path, problems: list[str]):
    """(context, page): Debian's Chromium, headless, a 1200 x 900 page whose uncaught
    JavaScript errors go to ``problems``."""
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": 1200, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield context, page
        finally:
            context.close()


@pytest.fixture
def served(tmp_path):
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=6, classes=(0, 1, 2))
    workspace = Workspace(home)
    index_folder(folder, workspace.model("m1"), workspace.index_path, progress=False)
    with LocalServer(workspace.index_path, home, log_path=tmp_path / "serve.log") as server:
        yield server, folder


def test_upload_then_click_through_matches(served, tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    server, folder = served
    query = sorted((folder / "1").glob("*.png"))[0]
    seen_urls: list[str] = []
    problems: list[str] = []  # uncaught JavaScript errors
    failures: list[tuple[int, str]] = []  # HTTP errors the page met
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda request: seen_urls.append(request.url))
            page.on("response", lambda r: r.status >= 400 and failures.append((r.status, r.url.removeprefix(server.url))))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server.url + "/")

            # the header: counts and model
            expect(page.locator("#summary")).to_contain_text("18 images")
            expect(page.locator("#summary")).to_contain_text("model m1 (16 bits)")
            expect(page.locator("#buckets tbody tr").first).to_be_visible()

            # upload an image: its matches appear, nearest first, itself at distance 0
            page.set_input_files("#file", str(query))
            expect(page.locator("#query-name")).to_have_text(query.name)
            matches = page.locator("#results .match")
            expect(matches.first).to_be_visible()
            expect(matches.first.locator(".distance")).to_have_text("distance 0")
            expect(matches.first.locator(".path")).to_have_text(str(query))
            expect(matches.first.locator(".tier")).to_have_text("exact")
            expect(page.locator("#results .group h3").first).to_contain_text("Exact copies")
            # exact, then near (copies), then similar; nearest first within a tier
            tiers = matches.locator(".tier").all_inner_texts()
            distances = [int(t.split()[-1]) for t in matches.locator(".distance").all_inner_texts()]
            assert tiers == sorted(tiers, key=["exact", "near", "similar"].index)
            for tier in ("near", "similar"):
                mine = [d for t, d in zip(tiers, distances) if t == tier]
                assert mine == sorted(mine)
            assert all(d <= 2 for t, d in zip(tiers, distances) if t == "similar")

            # click another match: the page searches from it
            target = matches.nth(1) if matches.count() > 1 else matches.first
            target_path = target.locator(".path").inner_text()
            target.click()
            expect(page.locator("#query-name")).to_have_text(target_path)
            expect(page.locator("#results .match").first.locator(".path")).to_have_text(target_path)
            expect(page.locator("#message")).to_contain_text("within radius 2")

            # the radius slider re-runs the search
            page.locator("#radius").fill("0")
            page.locator("#radius").dispatch_event("change")
            expect(page.locator("#message")).to_contain_text("within radius 0")
            assert set(page.locator("#results .match .distance").all_inner_texts()) == {"distance 0"}

            # a bucket's members
            page.locator("#buckets tbody button").first.click()
            expect(page.locator("#query-name")).to_contain_text("Bucket ")

            # a bad file: a clear message naming it
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            expect(page.locator("#message")).to_contain_text("Bad file: notes.png: not a recognised image format")
        finally:
            context.close()
    assert all(url.startswith(server.url) or url.startswith(("blob:", "data:")) for url in seen_urls), seen_urls
    assert problems == []
    # the only errors: no report for this model yet, and the bad file
    assert sorted(failures) == [(404, "/api/report"), (422, "/api/search/upload?radius=0&limit=60")], failures


def test_the_page_keeps_its_searches_in_the_url_hides_what_it_should_and_fits_a_phone(served, tmp_path):
    from playwright.sync_api import expect

    server, folder = served
    query = sorted((folder / "2").glob("*.png"))[0]
    problems: list[str] = []
    with browser(tmp_path, problems) as (context, page):
        page.goto(server.url + "/")
        expect(page.locator("#summary")).to_contain_text("18 images")
        # first load: no empty query box (the CSS display of .query overrode [hidden])
        expect(page.locator("#query")).to_be_hidden()

        page.locator("#radius").fill("4")  # a wide radius: several matches to click through
        page.locator("#radius").dispatch_event("change")
        page.set_input_files("#file", str(query))
        matches = page.locator("#results .match")
        expect(matches.nth(2)).to_be_visible()
        first_path = matches.nth(1).locator(".path").inner_text()
        matches.nth(1).click()
        expect(page.locator("#query-name")).to_have_text(first_path)
        assert "id=" in page.url and "radius=4" in page.url
        first_url = page.url
        second = page.locator("#results .match").last
        second_path = second.locator(".path").inner_text()
        second.click()
        expect(page.locator("#query-name")).to_have_text(second_path)
        # Back and Forward step through the searches; a link opens its search
        page.go_back()
        expect(page.locator("#query-name")).to_have_text(first_path)
        assert page.url == first_url
        page.go_forward()
        expect(page.locator("#query-name")).to_have_text(second_path)

        # "Show at most" 0 is put back to 1, and the page says so
        page.locator("#limit").fill("0")
        page.locator("#limit").dispatch_event("change")
        expect(page.locator("#message")).to_contain_text("is 1 to 1000: set to 1")
        expect(page.locator("#results .match")).to_have_count(1)

        # a colour photo on a model of small grey images: the page says why matches may mean little
        import numpy as np
        from PIL import Image

        photo = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
        page.set_input_files("#file", str(photo))
        expect(page.locator("#message")).to_contain_text("Note: the model was trained on 8x8 grey images")

        # an error after a search: the previous query's header goes too
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        expect(page.locator("#message")).to_contain_text("Bad file")
        expect(page.locator("#query")).to_be_hidden()

        # a phone, 390 px wide, opening a shared link: nothing runs off the screen
        phone = context.new_page()
        phone.set_viewport_size({"width": 390, "height": 800})
        phone.goto(first_url)
        expect(phone.locator("#query-name")).to_have_text(first_path)
        expect(phone.locator("#buckets tbody tr").first).to_be_visible()
        for width in (390, 360):
            phone.set_viewport_size({"width": width, "height": 800})
            scroll, inner = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert scroll <= inner, (width, scroll, inner)
    assert problems == []


SPLIT_NAMES = """(span) => {
  // the words of a path (between slashes, or after a hyphen: where lines may break) that
  // wrap onto two lines though they fit on one
  const text = span.textContent, width = span.getBoundingClientRect().width, split = [];
  const nodes = [];  // [text node, its first character's offset in the path]
  let offset = 0;
  for (const node of span.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) { nodes.push([node, offset]); offset += node.length; }
  }
  const words = [...text.matchAll(/[^\\/-]+-?/g)];
  for (const match of words) {
    const word = match[0], start = match.index, end = start + word.length;
    const found = nodes.find(([node, at]) => at <= start && end <= at + node.length);
    if (!found) continue;
    const range = document.createRange();
    range.setStart(found[0], start - found[1]);
    range.setEnd(found[0], end - found[1]);
    const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    const probe = document.createElement("span");
    probe.style.whiteSpace = "nowrap";
    probe.textContent = word;
    span.append(probe);
    const alone = probe.getBoundingClientRect().width;
    probe.remove();
    if (lines.size > 1 && alone <= width) split.push(word);
  }
  return split;
}"""



def test_one_box_finds_by_id_path_or_code_and_paths_figures_and_focus_read_well(served, tmp_path):
    from playwright.sync_api import expect

    from semhash.pipeline import evaluate_index
    from semhash.workspace import Workspace

    server, folder = served
    workspace = Workspace(tmp_path / "ws")
    evaluate_index(workspace, workspace.index_path)  # a report, with figures
    target = sorted((folder / "1").glob("*.png"))[2]
    problems: list[str] = []
    with browser(tmp_path, problems) as (context, page):
        page.goto(server.url + "/")
        expect(page.locator("#summary")).to_contain_text("18 images")
        assert tab_through(page, 10) == []  # links, file chooser, radius, limit, the box: each shows a focus ring

        box = page.locator("#find-text")
        box.fill(str(target))  # a path
        box.press("Enter")
        expect(page.locator("#query-name")).to_have_text(str(target))
        assert "id=" in page.url
        by_path = page.url
        bits = page.locator("#query-bits").inner_text()
        box.fill(bits)  # a code: as many bits as the index's codes
        box.press("Enter")
        expect(page.locator("#query-name")).to_have_text(bits)
        expect(page.locator("#query-count")).to_contain_text("within radius 2 of this code")
        assert f"code={int(bits[::-1], 2)}" in page.url or f"code={bits}" in page.url
        expect(page.locator(f'#results .match[data-id="{by_path.split("id=")[1].split("&")[0]}"]')).to_have_count(1)
        page.go_back()
        expect(page.locator("#query-name")).to_have_text(str(target))
        image_id = by_path.split("id=")[1].split("&")[0]
        box.fill(f"id:{image_id}")
        box.press("Enter")
        expect(page.locator("#query-name")).to_have_text(str(target))
        box.fill(str(folder / "nothing-here.png"))
        box.press("Enter")
        expect(page.locator("#message")).to_contain_text("no indexed image at")
        expect(page.locator("#query")).to_be_hidden()

        # paging: "Show at most" matches a page, Previous/Next, each page in the URL
        page.locator("#radius").fill("4")
        page.locator("#radius").dispatch_event("input")
        page.locator("#limit").fill("2")
        page.locator("#limit").dispatch_event("change")
        box.fill(str(target))
        box.press("Enter")
        expect(page.locator("#results .match")).to_have_count(2)
        expect(page.locator("#page-of")).to_contain_text("matches 1–2 of")
        first_page = page.locator("#results .match").evaluate_all("(cards) => cards.map((c) => c.dataset.id)")
        page.locator("#next").click()
        expect(page.locator("#page-of")).to_contain_text("matches 3–4 of")
        assert "offset=2" in page.url
        second_page = page.locator("#results .match").evaluate_all("(cards) => cards.map((c) => c.dataset.id)")
        assert not set(first_page) & set(second_page), (first_page, second_page)
        page.go_back()
        expect(page.locator("#page-of")).to_contain_text("matches 1–2 of")
        # the query image opens full size; "Actual size" shows every pixel
        page.locator("#query-open").click()
        expect(page.locator("#viewer")).to_be_visible()
        assert page.locator("#viewer-image").get_attribute("src").endswith("/file")
        page.locator("#viewer-zoom").click()
        expect(page.locator("#viewer-zoom")).to_have_attribute("aria-pressed", "true")
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()
        page.locator("#limit").fill("60")
        page.locator("#limit").dispatch_event("change")

        # paths on the match cards break after a slash, not inside a name that fits on a line
        expect(page.locator("#results .match").nth(2)).to_be_visible()
        for width in (1200, 390):
            page.set_viewport_size({"width": width, "height": 900})
            for span in page.locator("#results .match .path").all()[:6]:
                assert span.evaluate(SPLIT_NAMES) == [], (width, span.inner_text())
        page.set_viewport_size({"width": 1200, "height": 900})

        # a report figure opens large, in the viewer; Esc brings focus back to it
        figure = page.locator("#figures .figure-open").first
        expect(figure).to_be_visible()
        small = figure.locator("img").bounding_box()["width"]
        figure.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#viewer")).to_be_visible()
        expect(page.locator("#viewer-image")).to_have_js_property("complete", True)
        large = page.locator("#viewer-image").bounding_box()["width"]
        assert large > 1.5 * small, (small, large)
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()
        assert page.evaluate("document.activeElement.classList.contains('figure-open')")
    assert problems == []


def test_a_missing_chromium_skips_here_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "find_chromium", lambda: None)
    monkeypatch.delenv("SEMHASH_CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        chromium_or_skip()
    monkeypatch.setenv("SEMHASH_CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"):
        chromium_or_skip()


@pytest.fixture
def copies_served(tmp_path):
    """`semhash serve --review` over photos with three planted groups of copies."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir(parents=True)
    china, flower = load_sample_images().images
    tiles = [Image.fromarray(img[y : y + 160, x : x + 160]) for img in (china, flower) for y, x in ((40, 30), (200, 300))]
    for i, tile in enumerate(tiles):
        tile.save(folder / ("b" if i == 3 else "a") / f"p{i}.png")
    tiles[0].save(folder / "a" / "p0-copy.jpg", quality=60)
    tiles[1].resize((80, 80)).save(folder / "a" / "p1-small.png")
    Image.eval(tiles[3], lambda v: int(255 * (v / 255) ** 0.8)).save(folder / "b" / "p3-brighter.png")  # (tile 2 is too flat)
    workspace = Workspace(home)
    index_folder(folder, workspace.model("m1"), workspace.index_path, progress=False)
    with LocalServer(workspace.index_path, home, log_path=tmp_path / "serve.log", extra_args=["--review"]) as server:
        yield server, workspace, folder


def fits(page) -> None:
    """Nothing runs off the screen: no horizontal scroll (else the elements that stick out)."""
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, (scroll, inner, page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
                 .slice(0, 6).map((e) => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().width)}px`)"""))


def focus_ring(page) -> str | None:
    """What the keyboard focus looks like: None when it shows a ring of at least 2 px, else
    a description of the focused element that does not."""
    return page.evaluate(
        """() => {
          let el = document.activeElement;
          if (!el || el === document.body) return null;
          if (el.id === "file") el = document.querySelector(".file-button");  // a hidden input: its label shows the ring
          const style = getComputedStyle(el);
          const ring = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
          return ring ? null : `${el.tagName.toLowerCase()}#${el.id}.${el.className}: outline ${style.outlineStyle} ${style.outlineWidth}`;
        }"""
    )


def tab_through(page, presses: int) -> list[str]:
    """Tab ``presses`` times from the top of the page -> the focused elements without a visible ring."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    missing = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        found = focus_ring(page)
        if found:
            missing.append(found)
    return missing


def test_review_three_groups_and_the_decisions_stay(copies_served, tmp_path, cli):
    import json

    from playwright.sync_api import expect

    from semhash.duplicates import find_duplicates

    server, workspace, folder = copies_served
    problems: list[str] = []
    with browser(tmp_path, problems) as (context, page):
        page.goto(server.url + "/")
        page.get_by_role("link", name="Duplicates").click()
        groups = page.locator(".group-review")
        expect(groups).to_have_count(3)
        expect(page.locator("#mode")).to_contain_text("Review mode")
        assert tab_through(page, 12) == []  # links, selects, buttons: every one shows a focus ring

        # one folder: its groups, and "keep the suggestion" for all of them in one go
        expect(page.locator("#label option")).to_have_count(3)  # all labels, a (2), b (1)
        page.locator("#folder").select_option(str(folder / "b"))
        expect(groups).to_have_count(1)
        assert "folder=" in page.url
        accept = page.locator("#accept-filtered")
        expect(accept).to_contain_text("of the 1 in " + str(folder / "b"))
        accept.click()
        expect(groups.first.locator(".decision")).to_contain_text("Decided: keep p3")
        page.go_back()  # Back: all folders again
        expect(groups).to_have_count(3)
        keys = [groups.nth(i).get_attribute("data-key") for i in range(3)]
        expect(groups.first.locator(".member.keeper .tier")).to_have_text("suggested keeper")
        # what the photo says of itself: its format, and (no EXIF here) its file's time
        import re

        expect(groups.first.locator(".member.keeper .fact").first).to_contain_text(re.compile(r"(PNG|JPEG) · modified \d{4}-\d\d-\d\d"))

        def group(key):
            return page.locator(f'.group-review[data-key="{key}"]')

        group(keys[0]).get_by_role("button", name="Not duplicates").click()
        expect(groups).to_have_count(2)
        group(keys[1]).get_by_role("button", name="Keep the suggested one").click()
        expect(group(keys[1]).locator(".decision")).to_contain_text("Decided: keep")
        group(keys[2]).get_by_role("button", name="Skip").click()
        expect(group(keys[2]).locator(".decision")).to_have_text("Decided: skipped for now")

        # the full-size viewer: keyboard only
        group(keys[1]).locator(".member a").first.focus()
        page.keyboard.press("Enter")
        viewer = page.locator("#viewer")
        expect(viewer).to_be_visible()
        expect(page.locator("#viewer-caption")).to_contain_text("1 of 2")
        assert "/file" in page.locator("#viewer-image").get_attribute("src")
        page.keyboard.press("ArrowRight")
        expect(page.locator("#viewer-caption")).to_contain_text("2 of 2")
        page.keyboard.press("Escape")
        expect(viewer).to_be_hidden()

        page.reload()  # the decisions are in the index, not in the page
        expect(groups).to_have_count(2)
        expect(group(keys[1]).locator(".decision")).to_contain_text("Decided: keep")
        expect(group(keys[1]).locator(".member.chosen")).to_have_count(1)
        expect(group(keys[2]).locator(".decision")).to_have_text("Decided: skipped for now")
        expect(page.locator("#totals")).to_contain_text("1 marked not duplicates")

        for width in (390, 360):
            page.set_viewport_size({"width": width, "height": 800})
            fits(page)
        # the plan, downloaded from the page, is what `semhash duplicates --plan` moves
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the plan").click()
        plan = tmp_path / "semhash-plan.json"
        download.value.save_as(plan)
    assert problems == []
    report = find_duplicates(workspace.index_path)  # `semhash duplicates` honours the decisions
    assert report.hidden_by_decisions == 1 and {g.key: g.decision for g in report.groups} == {keys[1]: "keep", keys[2]: "skip"}
    assert [g["key"] for g in json.loads(plan.read_text())["groups"]] == [keys[1]]
    moved = cli("duplicates", "--plan", plan, "--move-to", tmp_path / "moved", "--index", workspace.index_path, home=workspace.root)
    assert moved.stdout.startswith("moved 1 duplicates")
