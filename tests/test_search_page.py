"""The search page (/ui) and its media route, through the real servers.

tiny_repo is served with a gallery of tiny_data's test split (views av and t) that `index add` wrote into a Milvus
Lite store in a subprocess (a process that opened a Lite store keeps it until it exits), and a media root holding
copies of the test clips, but for one whose file is a symlink to a clip outside the root. The page, its assets and
/ui/info load; the media route serves a gallery file whole and by byte range (206, Content-Range, the same bytes),
refuses bad ranges with 416, an unknown id, a path with ../ and a file outside the root with 404; a search through
the page's own request format (binary BYTES) is answered with hits the media route serves; without a media root
every /ui path is a 404 that says how to turn the page on. Headless Chromium (skipped when none is installed) loads
/ui/?q=...: the page shows k cards whose players have a source, and logs nothing to the console;
$OMNIRETRIEVER_PAGE_SCREENSHOT names a PNG to write of it.
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


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
                None)


def headless(url: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Chromium loading `url` headless until the page is idle (virtual time waits for its fetches)."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install -y chromium)")
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=30000", *args, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_a_browser_shows_the_hits_of_a_text_query(endpoint, records, tmp_path):
    k = 4
    url = f"{endpoint.page_url}?q={urllib.request.quote(records[0].text)}&k={k}&gallery=av"
    started = time.perf_counter()
    run = headless(url, "--dump-dom")
    elapsed = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert 'data-ready="true"' in dom, dom[-2000:]
    cards = re.findall(r'<article class="card" data-id="([^"]+)"[^>]*>(.*?)</article>', dom, re.S)
    loaded = len(re.findall(r'<article class="card"[^>]* data-media="loaded"', dom))
    failed = len(re.findall(r'<article class="card"[^>]* data-media="failed"', dom))
    assert len(cards) == k, dom[-3000:]
    for item_id, body in cards:
        src = re.search(r'<video[^>]* src="([^"]+)"', body)
        assert src and src[1].startswith("/ui/media/"), body
        status, headers, _ = get(endpoint.http_url + src[1].split("#")[0], {"Range": "bytes=0-1"})
        assert status == 206 and headers["content-type"] == "video/mp4", (item_id, status)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    page_ms = re.search(r'data-search-ms="(\d+)"', dom)
    assert page_ms, dom[-2000:]
    print(f"headless Chromium: page, info, search and {k} cards in {elapsed:.1f} s (browser start included); "
          f"the page's own time to results: {page_ms[1]} ms (virtual time); players with metadata loaded: "
          f"{loaded}, failed: {failed}")
    assert failed == 0, dom[-3000:]
    shot = os.environ.get("OMNIRETRIEVER_PAGE_SCREENSHOT")
    if shot:
        run = headless(url, f"--screenshot={Path(shot).resolve()}", "--window-size=1280,900", "--hide-scrollbars")
        assert run.returncode == 0 and Path(shot).stat().st_size > 0, run.stderr[-2000:]
