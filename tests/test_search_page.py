"""The search page (/ui) and its media route, through the real servers.

tiny_repo is served with a gallery of tiny_data's test split (views av and t) that `index add` wrote into a Milvus
Lite store in a subprocess (a process that opened a Lite store keeps it until it exits), and a media root holding
copies of the test clips, but for one whose file is a symlink to a clip outside the root. The page, its assets and
/ui/info load; the media route serves a gallery file whole and by byte range (206, Content-Range, the same bytes),
refuses bad ranges with 416, an unknown id, a path with ../ and a file outside the root with 404; a search through
the page's own request format (binary BYTES) is answered with hits the media route serves; without a media root
every /ui path is a 404 that says how to turn the page on.

Headless Chromium, driven over WebDriver (Debian's chromium and chromium-driver; skipped, saying so, when either is
missing), uses the page as a person would: a link with ?q= shows k cards whose players load their media; a clip
picked in the file input finds its own entry first, and with a filter excluding it does not (a bad filter shows the
field it named); "more like this" on a card searches with that hit's media and finds it first; an undecodable file shows the API's 400 message and no cards; the console logs no error (but the
browser's note of that 400). $OMNIRETRIEVER_PAGE_SCREENSHOT names a PNG to write of the text query's results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from model.manifest import read_split
from serving.launcher import LocalEndpoint
from serving import media_files as ui  # the framework-free half: kserve must not share this process with tritonclient
from serving.tensors import SEARCH_MODEL


@pytest.fixture(scope="module")
def gallery(tiny_run, tiny_data, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("page-gallery") / "test.db"
    added = subprocess.run([sys.executable, "-m", "omniretriever", "index", "add", "--model", str(tiny_run), "--data",
                            str(tiny_data), "--split", "test", "--uri", str(store), "--view", "av", "--view", "t",
                            "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert added.returncode == 0, added.stderr[-3000:]
    return store


@pytest.fixture(scope="module")
def records(tiny_data):
    return read_split(tiny_data, "test")


@pytest.fixture(scope="module")
def media_root(tiny_data, records, tmp_path_factory) -> Path:
    """Copies of the test clips at their manifest paths; the last record's file links to a clip outside."""
    root = tmp_path_factory.mktemp("page-media") / "data"
    outside = tmp_path_factory.mktemp("outside") / "secret.mp4"
    shutil.copyfile(tiny_data / records[-1].video, outside)
    for rec in records:
        target = root / rec.video
        target.parent.mkdir(parents=True, exist_ok=True)
        if rec is records[-1]:
            target.symlink_to(outside)
        else:
            shutil.copyfile(tiny_data / rec.video, target)
    return root


@pytest.fixture(scope="module")
def endpoint(tiny_repo, gallery, media_root):
    with LocalEndpoint(tiny_repo, index=gallery, media_root=media_root, startup_timeout=300) as ep:
        yield ep


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def page_search(endpoint, text: str | None, top_k: int, gallery: str,
                video: bytes | None = None, audio: bytes | None = None) -> tuple[int, dict]:
    """A search the way app.js sends it: a JSON header, then each input as one binary BYTES element."""
    inputs = [(name, data) for name, data in (("TEXT", text.encode() if text is not None else None), ("VIDEO", video),
                                                  ("AUDIO", audio)) if data is not None]
    elements = [len(data).to_bytes(4, "little") + data for _, data in inputs]
    header = json.dumps({"inputs": [{"name": name, "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(element)}}
                                    for (name, _), element in zip(inputs, elements)],
                         "parameters": {"top_k": top_k, "gallery": gallery}}).encode()
    request = urllib.request.Request(f"{endpoint.http_url}/v2/models/{SEARCH_MODEL}/infer",
                                     data=header + b"".join(elements),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Inference-Header-Content-Length": str(len(header))})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("path, content_type", [("/ui", "text/html"), ("/ui/", "text/html"),
                                                ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")])
def test_the_page_and_its_assets_load(endpoint, path, content_type):
    status, headers, body = get(endpoint.http_url + path)
    assert status == 200 and headers["content-type"].startswith(content_type), (status, headers)
    assert body == (ui.UI_DIR / ("index.html" if path in ("/ui", "/ui/") else path.rsplit("/", 1)[1])).read_bytes()


@pytest.mark.parametrize("path", ["/ui/ui.py", "/ui/../server/ui.py", "/ui/%2e%2e/server/ui.py", "/ui/missing.js"])
def test_nothing_but_the_page_files_is_served(endpoint, path):
    status, _, body = get(endpoint.http_url + path)
    assert status == 404, (path, status, body[:200])


def test_info_names_the_model_and_the_gallery(endpoint, tiny_repo, records):
    started = time.perf_counter()
    for path in ("/ui/", "/ui/style.css", "/ui/app.js"):
        assert get(endpoint.http_url + path)[0] == 200
    status, _, body = get(f"{endpoint.http_url}/ui/info")
    print(f"page, assets and info: {(time.perf_counter() - started) * 1000:.0f} ms")
    info = json.loads(body)
    digest = json.loads((tiny_repo / "production" / "omniretriever-encoder" / "model.json").read_text())["weights_sha256"]
    assert status == 200 and info["weights_sha256"] == digest and info["search_model"] == SEARCH_MODEL
    assert info["views"] == ["t", "av"] and info["gallery"]["t"]["items"] == len(records), info
    assert info["gallery"]["av"]["entries"] >= len(records)


def test_a_text_search_returns_hits_whose_media_is_served(endpoint, records, media_root):
    started = time.perf_counter()
    status, result = page_search(endpoint, records[0].text, 5, "av")
    elapsed = time.perf_counter() - started
    assert status == 200, result
    out = {o["name"]: o["data"] for o in result["outputs"]}
    assert len(out["IDS"]) == 5 and out["SCORES"] == sorted(out["SCORES"], reverse=True)
    print(f"text search through the page's request format: {elapsed * 1000:.0f} ms")
    for item_id, uri in zip(out["IDS"], out["MEDIA_URIS"]):
        if item_id == records[-1].id:  # the file linking out of the root
            continue
        status, headers, body = get(f"{endpoint.http_url}/ui/media/{urllib.request.quote(item_id, safe='')}")
        assert status == 200 and headers["content-type"] == "video/mp4", (item_id, status, headers)
        assert body == (media_root / uri).read_bytes()


@pytest.mark.parametrize("header, first, last", [("bytes=0-99", 0, 99), ("bytes=100-", 100, None),
                                                 ("bytes=-50", -50, None), ("bytes=10-999999999", 10, None)])
def test_the_media_route_serves_byte_ranges(endpoint, records, media_root, header, first, last):
    data = (media_root / records[0].video).read_bytes()
    status, headers, body = get(f"{endpoint.http_url}/ui/media/{records[0].id}", {"Range": header})
    want = data[first:] if last is None else data[first:last + 1]
    start = len(data) + first if first < 0 else first
    assert status == 206 and body == want, (status, headers)
    assert headers["content-range"] == f"bytes {start}-{start + len(want) - 1}/{len(data)}"
    assert headers["content-length"] == str(len(want)) and headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-0", "bytes=-"])
def test_a_bad_range_is_416(endpoint, records, media_root, header):
    size = (media_root / records[0].video).stat().st_size
    status, headers, body = get(f"{endpoint.http_url}/ui/media/{records[0].id}", {"Range": header})
    assert status == 416 and headers["content-range"] == f"bytes */{size}", (header, status, body)
    assert json.loads(body)["error"]


def test_head_gives_the_size_without_the_body(endpoint, records, media_root):
    status, headers, body = get(f"{endpoint.http_url}/ui/media/{records[0].id}", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str((media_root / records[0].video).stat().st_size)


@pytest.mark.parametrize("item", ["no-such-item", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                                  "media", "outside"])
def test_unknown_ids_paths_and_files_outside_the_root_are_404(endpoint, records, item):
    item = records[-1].id if item == "outside" else item  # its file is a symlink out of the media root
    status, _, body = get(f"{endpoint.http_url}/ui/media/{item}")
    assert status == 404 and json.loads(body)["error"], (item, status, body)


@pytest.mark.parametrize("text, video, view, word", [("a dog", None, "tva", "gallery"),
                                                        (None, b"not a video" * 10, "av", "video"),
                                                        ("", None, "av", "modality")])
def test_api_errors_reach_the_page_as_messages(endpoint, text, video, view, word):
    status, result = page_search(endpoint, text, 5, view, video=video)
    assert status == 400 and word in result["error"].lower(), result


def test_a_hits_media_finds_itself_like_more_like_this(endpoint, records):
    """What "more like this" sends for an av hit: its media file (fetched from the media route) as VIDEO and AUDIO."""
    status, _, clip = get(f"{endpoint.http_url}/ui/media/{records[0].id}")
    assert status == 200
    status, result = page_search(endpoint, None, 3, "av", video=clip, audio=clip)
    out = {o["name"]: o["data"] for o in result["outputs"]} if status == 200 else result
    assert status == 200 and out["IDS"][0] == records[0].id and out["SCORES"][0] > 0.99, out


PAGE_OFF = """
import json
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serving.server import ui
from serving.server.http_api import _answering
app = FastAPI()
ui.register(app, None, None, None, _answering)
client = TestClient(app)
print(json.dumps({p: [r.status_code, r.json()] for p in ("/ui", "/ui/", "/ui/app.js", "/ui/info", "/ui/media/x")
                  for r in [client.get(p)]}))
"""


def test_without_a_media_root_the_page_is_off():
    """In a process of its own: kserve (under the routes) cannot share one with tritonclient.grpc."""
    done = subprocess.run([sys.executable, "-c", PAGE_OFF], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for path, (status, body) in json.loads(done.stdout.strip().splitlines()[-1]).items():
        assert status == 404 and "--media_root" in body["error"], (path, body)


def test_a_media_root_needs_an_index(tiny_repo, tmp_path):
    with pytest.raises(ValueError, match="needs an index"):
        LocalEndpoint(tiny_repo, media_root=tmp_path).start()


@pytest.mark.parametrize("header, size, want", [(None, 10, None), ("bytes=0-0", 10, (0, 0)), ("bytes=9-", 10, (9, 9)),
                                                ("bytes=-3", 10, (7, 9)), ("bytes=-30", 10, (0, 9)),
                                                ("bytes=2-100", 10, (2, 9))])
def test_byte_range(header, size, want):
    assert ui.byte_range(header, size) == want


@pytest.mark.parametrize("relative, inside", [("a/b.mp4", True), ("../x.mp4", False), ("/etc/passwd", False),
                                              ("a/../../x.mp4", False), ("", False), ("a/../b.mp4", True)])
def test_confined(tmp_path, relative, inside):
    assert (ui.confined(tmp_path, relative) is not None) == inside


def chromium() -> tuple[str, str] | None:
    """(the browser, its WebDriver): Debian's chromium and chromium-driver."""
    browser = next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                   None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven over WebDriver, with its console log kept."""
    found = chromium()
    if found is None:
        pytest.skip("no Chromium with chromedriver found (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--window-size=1280,900", "--hide-scrollbars", "--mute-audio"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)  # a given driver: nothing is looked up
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


WAIT = 90  # seconds: a search on a busy 2-core machine, players' metadata included


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: condition(d), f"the page never {what}")


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "true", "got ready")


def run_search(driver, action) -> None:
    """action() starts a search on the open page; wait until its results or its error are shown."""
    driver.execute_script("delete document.body.dataset.searchMs; document.getElementById('error').hidden = true;")
    action()
    wait_for(driver, lambda d: d.execute_script(
        "return document.body.dataset.searchMs !== undefined || !document.getElementById('error').hidden"),
        "showed results or an error")


def cards(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results article.card")


def shown_error(driver) -> str | None:
    return driver.execute_script("const e = document.getElementById('error'); return e.hidden ? null : e.textContent")


def console_errors(driver, allowed: str | None = None) -> list[str]:
    """The console's SEVERE entries since the last call (the log is drained), but for those matching `allowed`."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not (allowed and re.search(allowed, e["message"]))]


def upload(driver, path: Path, view: str, k: int, filter: str = "") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.find_element(By.ID, "text").clear()
    driver.find_element(By.ID, "filter").clear()
    driver.find_element(By.ID, "filter").send_keys(filter)
    driver.find_element(By.ID, "file").send_keys(str(path))
    Select(driver.find_element(By.ID, "gallery")).select_by_value(view)
    k_box = driver.find_element(By.ID, "top-k")
    k_box.clear()
    k_box.send_keys(str(k))
    run_search(driver, driver.find_element(By.ID, "go").click)


def test_a_browser_shows_the_hits_of_a_text_query(endpoint, records, browser):
    k = 4
    url = f"{endpoint.page_url}?q={urllib.request.quote(records[0].text)}&k={k}&gallery=av"
    started = time.perf_counter()
    open_page(browser, url)
    wait_for(browser, lambda d: d.execute_script("return document.body.dataset.searchMs") is not None, "searched")
    elapsed = time.perf_counter() - started
    assert shown_error(browser) is None
    found = cards(browser)
    assert len(found) == k
    wait_for(browser, lambda d: all(c.get_attribute("data-media") for c in cards(d)), "loaded every player")
    for card in found:
        src = card.find_element("css selector", "video").get_attribute("src")
        assert "/ui/media/" in src, src
        status, headers, _ = get(src.split("#")[0], {"Range": "bytes=0-1"})
        assert status == 206 and headers["content-type"] == "video/mp4", (card.get_attribute("data-id"), status)
    assert [c.get_attribute("data-media") for c in found] == ["loaded"] * k
    captions = {r.id: r.text for r in records}
    for card in found:  # each card shows its item's caption, as the store records it
        assert card.find_element("css selector", ".caption").text == captions[card.get_attribute("data-id")]
    timing = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return [n.loadEventEnd, n.domContentLoadedEventEnd]")
    print(f"headless Chromium: page loaded in {timing[0]:.0f} ms, {k} results shown "
          f"{browser.execute_script('return document.body.dataset.searchMs')} ms after the search was sent "
          f"({elapsed:.2f} s from navigation to results shown)")
    assert console_errors(browser) == []
    shot = os.environ.get("OMNIRETRIEVER_PAGE_SCREENSHOT")
    if shot:
        browser.execute_script("for (const v of document.querySelectorAll('video')) v.currentTime = 0.5;")
        time.sleep(1.0)  # the seeked frames painted
        assert browser.save_screenshot(str(Path(shot).resolve())) and Path(shot).stat().st_size > 0


def test_an_uploaded_clip_is_found_in_the_gallery(endpoint, records, tiny_data, browser):
    """A gallery clip picked in the file input (sent as video and audio, as the page does for a video file) finds
    its own entry first in the av gallery: the bytes the browser sent are the file's, decoded as indexing did."""
    open_page(browser, endpoint.page_url)
    upload(browser, (tiny_data / records[1].video).resolve(), "av", 5)
    assert shown_error(browser) is None
    ids = [c.get_attribute("data-id") for c in cards(browser)]
    assert len(ids) == 5 and ids[0] == records[1].id, ids
    score = cards(browser)[0].find_element("css selector", ".score").text
    assert float(score.split()[-1]) > 0.99, score
    assert console_errors(browser) == []


def test_a_filter_narrows_the_hits_and_a_bad_one_shows_the_field(endpoint, records, tiny_data, browser):
    clip, gold = (tiny_data / records[1].video).resolve(), records[1].id
    open_page(browser, endpoint.page_url)
    upload(browser, clip, "av", 5, filter=f'item_id != "{gold}" and split == "test"')
    assert shown_error(browser) is None
    ids = [c.get_attribute("data-id") for c in cards(browser)]
    assert len(ids) == 5 and gold not in ids, ids
    assert f'where item_id != "{gold}"' in browser.find_element("id", "status").text
    assert console_errors(browser) == []
    open_page(browser, endpoint.page_url)
    upload(browser, clip, "av", 5, filter='content_hash == "x"')
    message = shown_error(browser)
    assert message and message.startswith("400:") and "unknown field 'content_hash'" in message, message
    assert console_errors(browser, allowed=r"/infer .*status of 400") == []


def test_more_like_this_searches_with_the_hit(endpoint, records, browser):
    open_page(browser, f"{endpoint.page_url}?q={urllib.request.quote(records[2].text)}&k=5&gallery=av")
    wait_for(browser, lambda d: len(cards(d)) == 5, "showed five cards")
    second = cards(browser)[1]
    chosen = second.get_attribute("data-id")
    run_search(browser, second.find_element("css selector", "button.more").click)
    assert shown_error(browser) is None
    ids = [c.get_attribute("data-id") for c in cards(browser)]
    assert ids[0] == chosen, (chosen, ids)
    status = browser.find_element("id", "status").text
    assert "video + audio" in status and "av gallery" in status, status
    assert console_errors(browser) == []


def test_an_undecodable_upload_shows_the_apis_error(endpoint, browser, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    open_page(browser, endpoint.page_url)
    upload(browser, broken, "t", 3)
    message = shown_error(browser)
    assert message and message.startswith("400:") and "VIDEO" in message.upper(), message
    assert cards(browser) == []  # nothing shown as if it were an answer
    # the one console entry is the browser's own note of the 400 response
    assert console_errors(browser, allowed=r"/infer .*status of 400") == []
