"""Download tests against a local HTTP server on 127.0.0.1 (never any other address).

The server serves small generated IDX .gz files; their sizes and md5s are injected into
fastmlp.datasets.CHECKSUMS, and $FASTMLP_MIRROR points at the server.
"""

import gzip
import hashlib
import http.server
import io
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data_helpers import closed_port, isolate
from fastmlp import datasets
from fastmlp.errors import ChecksumError, DataError, DownloadError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def _idx_gz(arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


def _make_files(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(10)[::-1] % 10).astype(np.uint8),
    }
    return arrays, {name: _idx_gz(a) for name, a in arrays.items()}


class Server:
    """A tiny HTTP server on 127.0.0.1: ``routes`` maps a URL path to bytes; ``log`` lists requests."""

    def __init__(self):
        self.routes = {}
        self.log = []
        self.delay = 0.0
        self.trickle = 0.0  # seconds between single bytes of the body (a server that trickles)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.log.append(self.path)
                if server.delay:
                    time.sleep(server.delay)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if server.trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(server.trickle)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Cache and home under tmp_path; every mirror on a closed local port unless a test says so."""
    isolate(tmp_path, monkeypatch)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {})
    monkeypatch.setattr(datasets, "TIMEOUT", 5.0)
    return tmp_path


@pytest.fixture
def mnist_mirror(server, monkeypatch):
    """The server serves small MNIST-named files under /; CHECKSUMS and FASTMLP_MIRROR point at them."""
    arrays, blobs = _make_files()
    for name, blob in blobs.items():
        server.routes["/" + name] = blob
    table = {name: (len(blob), hashlib.md5(blob).hexdigest()) for name, blob in blobs.items()}
    monkeypatch.setitem(datasets.CHECKSUMS, "mnist", table)
    monkeypatch.setenv("FASTMLP_MIRROR", server.url + "/")
    return server, arrays, blobs


def _leftovers(d):
    """Names in ``d`` other than the four canonical files (e.g. temporary .part files)."""
    return sorted(p.name for p in Path(d).iterdir() if p.name not in FILES)


def _names(d):
    return sorted(p.name for p in Path(d).iterdir())


def test_download_success(isolated, mnist_mirror):
    server, arrays, blobs = mnist_mirror
    target = isolated / "data"
    got = datasets.download("mnist", data_dir=target, progress=False)
    assert got == target
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temporary files left
    for name in FILES:
        assert (target / name).read_bytes() == blobs[name]
        assert (target / name).stat().st_mode & 0o777 == 0o644
    assert sorted(server.log) == sorted("/" + n for n in FILES)
    X, y = datasets.load("mnist", data_dir=target, download=False)
    np.testing.assert_array_equal(X, arrays["train-images-idx3-ubyte.gz"].reshape(30, 784))
    np.testing.assert_array_equal(y, np.arange(30) % 10)
    assert [s.startswith("ok: ") for _, s in datasets.verify("mnist", data_dir=target)] == [True] * 4
    # Already there: nothing is fetched again.
    assert datasets.download("mnist", data_dir=target, progress=False) == target
    assert len(server.log) == 4


def test_load_downloads_only_what_the_split_needs_into_the_cache(isolated, mnist_mirror):
    server, arrays, _ = mnist_mirror
    X, y = datasets.load("mnist", split="test", progress=False)
    cache = isolated / "xdg" / "fastmlp" / "mnist"
    assert sorted(server.log) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]
    assert sorted(p.name for p in cache.iterdir()) == ["t10k-images-idx3-ubyte.gz",
                                                       "t10k-labels-idx1-ubyte.gz"]
    assert X.shape == (10, 784) and X.dtype == np.uint8 and y.tolist() == list(range(9, -1, -1))
    # The train split then fetches just the two train files, into the same directory.
    datasets.load("mnist", progress=False)
    assert len(server.log) == 4 and len(list(cache.iterdir())) == 4
    assert datasets.path("mnist") == cache


def test_download_goes_to_fastmlp_data(isolated, mnist_mirror, monkeypatch):
    root = isolated / "shared-data"
    monkeypatch.setenv("FASTMLP_DATA", str(root))
    assert datasets.download("mnist", progress=False) == root / "mnist"
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(FILES)


def test_truncated_download_is_rejected_and_deleted(isolated, mnist_mirror):
    server, _, blobs = mnist_mirror
    name = "train-labels-idx1-ubyte.gz"
    server.routes["/" + name] = blobs[name][:-7]
    target = isolated / "data"
    with pytest.raises(ChecksumError, match=rf"bad download of {name} for mnist from "
                                            rf"http://127.0.0.1:\d+/{name}: size mismatch: got "
                                            rf"{len(blobs[name]) - 7} bytes, expected "
                                            rf"{len(blobs[name])}; the partial file was deleted"):
        datasets.download("mnist", data_dir=target, progress=False)
    assert not (target / name).exists()
    assert _leftovers(target) == []  # no .part file


def test_wrong_md5_is_rejected_and_deleted(isolated, mnist_mirror):
    server, _, blobs = mnist_mirror
    name = "t10k-images-idx3-ubyte.gz"
    bad = bytearray(blobs[name])
    bad[-9] ^= 0x01
    server.routes["/" + name] = bytes(bad)
    with pytest.raises(ChecksumError, match=rf"{name} .*md5 mismatch: got [0-9a-f]{{32}}, expected "
                                            rf"{hashlib.md5(blobs[name]).hexdigest()}; the file was "
                                            rf"deleted"):
        datasets.load("mnist", split="test", progress=False)
    cache = isolated / "xdg" / "fastmlp" / "mnist"
    assert not (cache / name).exists() and _leftovers(cache) == []


def test_oversized_download_stops_early(isolated, mnist_mirror):
    server, _, blobs = mnist_mirror
    name = "t10k-labels-idx1-ubyte.gz"
    server.routes["/" + name] = blobs[name] + bytes(200000)
    with pytest.raises(ChecksumError, match=rf"size mismatch: more than the expected "
                                            rf"{len(blobs[name])} bytes"):
        datasets.load("mnist", split="test", progress=False)
    assert _names(isolated / "xdg" / "fastmlp" / "mnist") == ["t10k-images-idx3-ubyte.gz"]


def test_http_404(isolated, mnist_mirror):
    server, _, _ = mnist_mirror
    del server.routes["/t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(DownloadError, match=r"could not download t10k-labels-idx1-ubyte.gz for mnist "
                                            r"from http://127.0.0.1:\d+/t10k-labels-idx1-ubyte.gz: "
                                            r"HTTP error 404 Not Found; check the network") as e:
        datasets.load("mnist", split="test", progress=False)
    assert not isinstance(e.value, ChecksumError)
    assert _names(isolated / "xdg" / "fastmlp" / "mnist") == ["t10k-images-idx3-ubyte.gz"]


def test_no_network(isolated, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("FASTMLP_MIRROR", f"http://127.0.0.1:{port}")
    target = isolated / "data"
    with pytest.raises(DownloadError, match=rf"could not download train-images-idx3-ubyte.gz for "
                                            rf"mnist from http://127.0.0.1:{port}/"
                                            rf"train-images-idx3-ubyte.gz: .*[Cc]onnection refused; "
                                            rf"check the network \(or \$FASTMLP_MIRROR\), or put "
                                            rf"the files in {target}") as e:
        datasets.download("mnist", data_dir=target, progress=False)
    assert "\n" not in str(e.value)
    assert list(target.iterdir()) == []


def test_timeout(isolated, mnist_mirror, monkeypatch):
    server, _, _ = mnist_mirror
    server.delay = 1.5
    monkeypatch.setattr(datasets, "TIMEOUT", 0.3)
    with pytest.raises(DownloadError, match=r"timed out after 0.3 s"):
        datasets.load("mnist", split="test", progress=False)
    assert _names(isolated / "xdg" / "fastmlp" / "mnist") == []


def test_a_trickling_download_hits_the_overall_deadline(isolated, mnist_mirror, monkeypatch):
    # One byte every 50 ms never trips the per-read timeout; the overall deadline (TIMEOUT plus the
    # size at MIN_RATE) does, and nothing is left behind.
    server, _, _ = mnist_mirror
    server.trickle = 0.05
    monkeypatch.setattr(datasets, "TIMEOUT", 0.5)
    monkeypatch.setattr(datasets, "MIN_RATE", 10**9)
    target = isolated / "data"
    with pytest.raises(DownloadError, match=r"too slow: \d+ of \d+ bytes in \d+ s, expected at least "
                                            r"\d+ KiB/s; the partial file was deleted") as e:
        datasets.download("mnist", data_dir=target, progress=False)
    assert "\n" not in str(e.value)
    assert _names(target) == []


def test_mirrors_are_tried_in_order(isolated, mnist_mirror, monkeypatch):
    server, _, _ = mnist_mirror
    monkeypatch.delenv("FASTMLP_MIRROR")
    dead = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (dead, server.url + "/"))
    datasets.load("mnist", split="test", progress=False)
    assert len(server.log) == 2
    # Both failing: one error naming both.
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (dead, server.url + "/missing/"))
    with pytest.raises(DownloadError, match=rf"from {dead}train-images-idx3-ubyte.gz: .*; "
                                            rf"{server.url}/missing/train-images-idx3-ubyte.gz: "
                                            rf"HTTP error 404"):
        datasets.load("mnist", progress=False)


def test_mirror_name_placeholder(isolated, server, monkeypatch):
    _, blobs = _make_files(seed=3)
    for name, blob in blobs.items():
        server.routes["/sets/fashion-mnist/" + name] = blob
    monkeypatch.setitem(datasets.CHECKSUMS, "fashion-mnist",
                        {n: (len(b), hashlib.md5(b).hexdigest()) for n, b in blobs.items()})
    monkeypatch.setenv("FASTMLP_MIRROR", server.url + "/sets/{name}")
    d = datasets.download("fashion-mnist", progress=False)
    assert d == isolated / "xdg" / "fastmlp" / "fashion-mnist"
    assert sorted(server.log) == sorted("/sets/fashion-mnist/" + n for n in FILES)


def test_unwritable_target(isolated, mnist_mirror):
    server, _, _ = mnist_mirror
    blocker = isolated / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DownloadError, match=r"cannot create directory .*a-file/sub for mnist: .*; "
                                            r"pass another data_dir or set \$FASTMLP_DATA"):
        datasets.download("mnist", data_dir=blocker / "sub", progress=False)
    assert server.log == []


def test_no_download_when_not_wanted(isolated, mnist_mirror):
    server, _, _ = mnist_mirror
    with pytest.raises(DataError, match=r"missing file train-images-idx3-ubyte.gz for mnist in "
                                        r".*xdg/fastmlp/mnist: put the four IDX files there, or run "
                                        r"`fastmlp datasets download mnist`") as e:
        datasets.load("mnist", download=False)
    assert not isinstance(e.value, DownloadError)
    assert server.log == []


def test_verify_after_download_catches_a_changed_file(isolated, mnist_mirror):
    target = isolated / "data"
    datasets.download("mnist", data_dir=target, progress=False)
    f = target / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(ChecksumError, match=r"checksum mismatch for .*train-labels-idx1-ubyte.gz "
                                            r"\(mnist\): \d+ bytes with md5 [0-9a-f]{32}, expected "
                                            r"\d+ bytes with md5 [0-9a-f]{32}; delete it and run "
                                            r"`fastmlp datasets download mnist`"):
        datasets.verify("mnist", data_dir=target)


def test_progress_messages(isolated, mnist_mirror, monkeypatch, capsys):
    datasets.load("mnist", split="test")  # progress=True, stderr not a terminal: one line per file
    err = capsys.readouterr().err
    assert err.count("fastmlp: downloading http://127.0.0.1:") == 2
    assert "t10k-images-idx3-ubyte.gz to " in err

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    datasets.load("mnist", split="train")
    out = term.getvalue()
    assert "fastmlp: downloading" in out
    assert "train-images-idx3-ubyte.gz" in out and "100%" in out  # click's progress bar


def test_download_of_builtin_sets(isolated, server):
    assert datasets.download("xor") is None
    assert server.log == []
