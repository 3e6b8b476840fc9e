"""Tests for ssd_eval.fetch against a local HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import re
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from ssd_eval import fetch
from ssd_eval.errors import UserError
from ssd_eval.fetch import download, ensure_coco, ensure_model
from ssd_eval.inference import model_info
from ssd_eval.utils import sha256_of

MAX_REQUESTS = 50  # a runaway retry loop fails the test instead of hanging it


@dataclass
class ServerState:
    """What the fake server serves and how it misbehaves; plus what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    drop_after: int | None = None  # send only this many body bytes, then close
    stall_after: int | None = None  # send this many body bytes, then stall
    corrupt: bool = False
    omit_length: bool = False  # no Content-Length: the body ends when the connection closes
    omit_content_range: bool = False  # 206 and 416 answers without Content-Range
    range_from_zero: bool = False  # answer a Range request with 206 of the whole file
    force_416: bool = False  # answer every Range request with 416
    chunked: bool = False  # Transfer-Encoding: chunked (one chunk)
    claim_total: int | None = None  # the file length Content-Range states (default: the true one)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        st: ServerState = self.server.state
        rec = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0}
        with st.lock:
            st.requests.append(rec)
            too_many = len(st.requests) > MAX_REQUESTS
        if too_many:
            rec["status"] = 503
            self.send_error(503)
            return
        data = st.files.get(self.path.lstrip("/"))
        if data is None:
            rec["status"] = 404
            self.send_error(404)
            return
        if st.corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", rec["range"] or "")
        if m and not st.ignore_range:
            start = int(m.group(1))
            if start >= len(data) or st.force_416:
                rec["status"] = 416
                self.send_response(416)
                if not st.omit_content_range:
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            if st.range_from_zero:
                start = 0
        body = data[start:]
        rec["status"] = status
        self.send_response(status)
        if st.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not st.omit_length:
            self.send_header("Content-Length", str(len(body)))
        if status == 206 and not st.omit_content_range:
            claim = len(data) if st.claim_total is None else st.claim_total
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{claim}")
        self.end_headers()
        if st.chunked:
            self.wfile.write(f"{len(body):x}\r\n".encode())
        cut = st.drop_after if st.drop_after is not None else st.stall_after
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            rec["sent"] = cut
            if st.stall_after is not None:
                st.release.wait(5)
            self.close_connection = True
            return
        self.wfile.write(body)
        if st.chunked:
            self.wfile.write(b"\r\n0\r\n\r\n")
        rec["sent"] = len(body)


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_one_line(err: UserError) -> str:
    msg = str(err)
    assert "\n" not in msg and msg
    return msg


DATA = _payload(300_000)


# --------------------------------------------------------------------------- download


def test_sha256_of_matches_hashlib(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(DATA)
    assert sha256_of(p, chunk_size=4096) == _sha(DATA)


def test_plain_download_with_size_and_sha(server, tmp_path):
    server.files["ssd-12.onnx"] = DATA
    dest = tmp_path / "models" / "sub" / "ssd-12.onnx"  # parents are created
    out = download(server.url("ssd-12.onnx"), dest, size=len(DATA), sha256=_sha(DATA).upper(),
                   config_key="model.path", progress=False)
    assert out == dest and dest.read_bytes() == DATA
    assert not dest.with_name("ssd-12.onnx.part").exists()
    assert not dest.with_name("ssd-12.onnx.sha256").exists()
    assert [r["range"] for r in server.requests] == [None]


def test_resume_after_interrupted_transfer(server, tmp_path):
    server.files["m.onnx"] = DATA
    server.drop_after = 100_000
    dest = tmp_path / "m.onnx"
    part = tmp_path / "m.onnx.part"
    with pytest.raises(UserError) as ei:
        download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA),
                 config_key="model.path", progress=False)
    msg = _assert_one_line(ei.value)
    assert "interrupted" in msg and server.url("m.onnx") in msg and str(dest) in msg
    assert not dest.exists()
    assert part.stat().st_size == 100_000

    server.drop_after = None
    download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA and not part.exists()
    last = server.requests[-1]
    assert last["range"] == "bytes=100000-"
    assert last["status"] == 206
    assert last["sent"] == len(DATA) - 100_000


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["m.onnx"] = DATA
    server.ignore_range = True
    dest = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.part").write_bytes(b"garbage!" * 1000)  # wrong prefix: must be discarded
    download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[-1]["range"] == "bytes=8000-"
    assert server.requests[-1]["status"] == 200
    assert server.requests[-1]["sent"] == len(DATA)


def test_416_on_complete_part_is_verified_without_body(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.part").write_bytes(DATA)
    download(server.url("m.onnx"), dest, sha256=_sha(DATA), progress=False)  # size unknown
    assert dest.read_bytes() == DATA
    assert [r["status"] for r in server.requests] == [416]


def test_complete_part_with_known_size_needs_no_request(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.part").write_bytes(DATA)
    download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA and server.requests == []


def test_corrupted_content_rejected_and_deleted(server, tmp_path):
    server.files["m.onnx"] = DATA
    server.corrupt = True
    dest = tmp_path / "m.onnx"
    with pytest.raises(UserError) as ei:
        download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA),
                 config_key="model.path", progress=False)
    msg = _assert_one_line(ei.value)
    assert "does not match expected" in msg and _sha(DATA) in msg and "model.path" in msg
    assert "deleted" in msg and server.url("m.onnx") in msg
    assert not dest.exists() and not (tmp_path / "m.onnx.part").exists()


def test_corrupt_partial_file_caught_by_sha(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.part").write_bytes(b"\0" * 1000)  # resumed onto a bad prefix
    with pytest.raises(UserError, match="sha256"):
        download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert not dest.exists() and not (tmp_path / "m.onnx.part").exists()
    download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA


def test_wrong_size_rejected(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    with pytest.raises(UserError) as ei:
        download(server.url("m.onnx"), dest, size=len(DATA) + 1, config_key="model.path",
                 progress=False)
    msg = _assert_one_line(ei.value)
    assert str(len(DATA) + 1) in msg and "model.path" in msg
    assert not dest.exists() and not (tmp_path / "m.onnx.part").exists()


def test_wrong_size_rejected_for_local_copy(tmp_path):
    src = tmp_path / "src.onnx"
    src.write_bytes(DATA)
    dest = tmp_path / "out" / "m.onnx"
    with pytest.raises(UserError, match="size 300000 bytes does not match expected 5"):
        download(str(src), dest, size=5, progress=False)
    assert not dest.exists() and not dest.with_name("m.onnx.part").exists()


def test_connection_refused_is_one_line_user_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/ssd-12.onnx"
    dest = tmp_path / "ssd-12.onnx"
    with pytest.raises(UserError) as ei:
        download(url, dest, size=10, config_key="model.path", progress=False, timeout=5)
    msg = _assert_one_line(ei.value)
    assert msg.startswith(f"cannot download ssd-12.onnx from {url} (")
    assert str(dest) in msg and "model.path" in msg and "refused" in msg.lower()
    assert not dest.exists()


def test_404_is_one_line_user_error(server, tmp_path):
    dest = tmp_path / "ssd-12.onnx"
    url = server.url("missing.onnx")
    with pytest.raises(UserError) as ei:
        download(url, dest, config_key="model.path", progress=False)
    msg = _assert_one_line(ei.value)
    assert url in msg and str(dest) in msg and "404" in msg and "model.path" in msg
    assert not dest.exists() and not dest.with_name("ssd-12.onnx.part").exists()


def test_stalled_server_times_out_and_keeps_part(server, tmp_path):
    server.files["m.onnx"] = DATA
    server.stall_after = 50_000
    dest = tmp_path / "m.onnx"
    with pytest.raises(UserError) as ei:
        download(server.url("m.onnx"), dest, size=len(DATA), progress=False, timeout=0.3)
    msg = _assert_one_line(ei.value)
    assert "timed out" in msg and "interrupted" in msg
    assert (tmp_path / "m.onnx.part").stat().st_size == 50_000
    server.release.set()


def test_file_url_and_local_path_sources(tmp_path):
    src = tmp_path / "mirror" / "ssd-12.onnx"
    src.parent.mkdir()
    src.write_bytes(DATA)
    for i, url in enumerate([src.as_uri(), str(src)]):
        dest = tmp_path / f"out{i}" / "ssd-12.onnx"
        download(url, dest, size=len(DATA), sha256=_sha(DATA), progress=False)
        assert dest.read_bytes() == DATA
        assert not dest.with_name("ssd-12.onnx.part").exists()


def test_local_source_corrupt_and_missing(tmp_path):
    src = tmp_path / "ssd-12.onnx"
    src.write_bytes(DATA)
    dest = tmp_path / "out" / "ssd-12.onnx"
    with pytest.raises(UserError, match="does not match expected"):
        download(src.as_uri(), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and src.read_bytes() == DATA  # the source is left alone
    with pytest.raises(UserError) as ei:
        download(str(tmp_path / "nope.onnx"), dest, config_key="model.path", progress=False)
    msg = _assert_one_line(ei.value)
    assert "nope.onnx" in msg and str(dest) in msg and "model.path" in msg


def test_unsupported_scheme_and_bad_sha(tmp_path):
    with pytest.raises(UserError, match="unsupported URL scheme"):
        download("ftp://example.invalid/x.onnx", tmp_path / "x.onnx", progress=False)
    with pytest.raises(UserError, match="model.sha256"):
        download("x", tmp_path / "x.onnx", sha256="abc", config_key="model.sha256")


def test_present_verified_file_skips_network(server, tmp_path):
    dest = tmp_path / "m.onnx"
    dest.write_bytes(DATA)
    out = download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert out == dest and server.requests == []


def test_present_mismatching_file_is_replaced(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"old version")
    download(server.url("m.onnx"), dest, size=len(DATA), sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA


def test_unpinned_sha_writes_side_file(server, tmp_path, caplog):
    server.files["ssd-10.onnx"] = DATA
    dest = tmp_path / "ssd-10.onnx"
    with caplog.at_level("INFO", logger="ssd_eval.fetch"):
        download(server.url("ssd-10.onnx"), dest, size=len(DATA), progress=False)
    side = tmp_path / "ssd-10.onnx.sha256"
    assert side.read_text() == f"{_sha(DATA)}  ssd-10.onnx\n"
    assert _sha(DATA) in caplog.text


# --------------------------------------------------------------------------- resume edge cases


def test_206_from_wrong_offset_restarts_from_zero(server, tmp_path):
    server.files["m.zip"] = DATA
    server.range_from_zero = True  # answers "Range: bytes=100000-" with bytes 0-...
    dest = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(DATA[:100_000])
    download(server.url("m.zip"), dest, progress=False)  # size and sha256 unknown
    assert dest.read_bytes() == DATA
    assert [(r["range"], r["status"]) for r in server.requests] == [
        ("bytes=100000-", 206), (None, 200)]


def test_part_larger_than_expected_size_starts_over_without_range(server, tmp_path):
    server.files["m.onnx"] = DATA
    dest = tmp_path / "m.onnx"
    (tmp_path / "m.onnx.part").write_bytes(DATA + b"trailing junk")
    download(server.url("m.onnx"), dest, size=len(DATA), progress=False)  # no sha256
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in server.requests] == [None]  # no Range beyond the end


@pytest.mark.parametrize("part_bytes", [DATA + b"x" * 10, DATA[:1000]], ids=["longer", "shorter"])
def test_416_whose_total_differs_from_part_starts_over(server, tmp_path, part_bytes):
    server.files["m.zip"] = DATA
    server.force_416 = True  # with "Content-Range: bytes */300000"
    dest = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(part_bytes)
    download(server.url("m.zip"), dest, progress=False)  # size and sha256 unknown
    assert dest.read_bytes() == DATA
    assert [(r["range"], r["status"]) for r in server.requests] == [
        (f"bytes={len(part_bytes)}-", 416), (None, 200)]


@pytest.mark.parametrize("size", [None, len(DATA)], ids=["size-unknown", "size-known"])
def test_416_without_total_is_never_taken_as_complete(server, tmp_path, size):
    server.files["m.zip"] = DATA
    server.force_416 = True
    server.omit_content_range = True
    dest = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(DATA[:1000])
    download(server.url("m.zip"), dest, size=size, progress=False)
    assert dest.read_bytes() == DATA
    assert [(r["range"], r["status"]) for r in server.requests] == [
        ("bytes=1000-", 416), (None, 200)]


def test_short_body_without_length_but_expected_size_is_interrupted(server, tmp_path):
    server.files["m.onnx"] = DATA
    server.omit_length = True
    server.drop_after = 100_000
    dest = tmp_path / "m.onnx"
    part = tmp_path / "m.onnx.part"
    with pytest.raises(UserError) as ei:
        download(server.url("m.onnx"), dest, size=len(DATA), progress=False)  # no sha256
    msg = _assert_one_line(ei.value)
    assert "interrupted after 100000 of 300000 bytes" in msg and str(dest) in msg
    assert not dest.exists() and part.stat().st_size == 100_000  # kept to resume
    server.drop_after = None
    download(server.url("m.onnx"), dest, size=len(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert server.requests[-1]["range"] == "bytes=100000-"


def test_short_206_without_length_uses_content_range_total(server, tmp_path):
    server.files["m.zip"] = DATA
    server.omit_length = True  # only Content-Range says how long the file is
    server.drop_after = 100_000
    dest = tmp_path / "m.zip"
    part = tmp_path / "m.zip.part"
    part.write_bytes(DATA[:50_000])
    with pytest.raises(UserError) as ei:
        download(server.url("m.zip"), dest, progress=False)  # size and sha256 unknown
    msg = _assert_one_line(ei.value)
    assert "interrupted after 150000 of 300000 bytes" in msg
    assert not dest.exists() and part.read_bytes() == DATA[:150_000]
    server.drop_after = None
    download(server.url("m.zip"), dest, progress=False)
    assert dest.read_bytes() == DATA


def test_body_longer_than_announced_total_is_deleted(server, tmp_path):
    server.files["m.zip"] = DATA
    server.omit_length = True
    server.claim_total = len(DATA) - 10  # Content-Range says 299990, the body gives 300000
    dest = tmp_path / "m.zip"
    (tmp_path / "m.zip.part").write_bytes(DATA[:1000])
    with pytest.raises(UserError) as ei:
        download(server.url("m.zip"), dest, progress=False)
    msg = _assert_one_line(ei.value)
    assert "sent 300000 bytes but announced 299990" in msg and str(dest) in msg
    assert not dest.exists() and not (tmp_path / "m.zip.part").exists()


def test_short_200_with_length_but_no_expected_size_is_interrupted(server, tmp_path):
    server.files["m.zip"] = DATA
    server.drop_after = 100_000
    dest = tmp_path / "m.zip"
    with pytest.raises(UserError, match="interrupted after 100000 of 300000 bytes"):
        download(server.url("m.zip"), dest, progress=False)
    assert not dest.exists() and (tmp_path / "m.zip.part").stat().st_size == 100_000


def test_truncated_chunked_body_keeps_part(server, tmp_path):
    server.files["m.zip"] = DATA
    server.chunked = True  # no length anywhere, but chunked framing shows the cut
    server.drop_after = 100_000
    dest = tmp_path / "m.zip"
    with pytest.raises(UserError, match="interrupted after 100000 bytes"):
        download(server.url("m.zip"), dest, progress=False)
    assert not dest.exists() and (tmp_path / "m.zip.part").stat().st_size == 100_000
    server.chunked, server.drop_after = False, None
    download(server.url("m.zip"), dest, progress=False)
    assert dest.read_bytes() == DATA and server.requests[-1]["status"] == 206


# --------------------------------------------------------------------------- local errors


def test_local_source_read_error_is_one_line(tmp_path, monkeypatch):
    src = tmp_path / "src.onnx"
    src.write_bytes(DATA)

    class _Unreadable(io.BytesIO):
        def read(self, *args):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        return _Unreadable() if Path(path) == src else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(fetch.transfer, "open", fake_open, raising=False)
    dest = tmp_path / "out" / "m.onnx"
    with pytest.raises(UserError) as ei:
        download(str(src), dest, config_key="model.path", progress=False)
    msg = _assert_one_line(ei.value)
    assert str(src) in msg and os.strerror(errno.EIO) in msg and "model.path" in msg
    assert not dest.exists()


def test_local_source_directory_and_unwritable_part(tmp_path):
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    dest = tmp_path / "out" / "m.onnx"
    with pytest.raises(UserError) as ei:
        download(str(folder), dest, progress=False)
    assert str(folder) in _assert_one_line(ei.value) and not dest.exists()
    src = tmp_path / "src.onnx"
    src.write_bytes(DATA)
    (tmp_path / "out" / "m.onnx.part").mkdir(parents=True)  # cannot be opened for writing
    with pytest.raises(UserError) as ei:
        download(str(src), dest, progress=False)
    assert f"cannot write {dest}.part" in _assert_one_line(ei.value) and not dest.exists()


def test_sha256_side_file_write_error_is_one_line(server, tmp_path):
    server.files["ssd-10.onnx"] = DATA
    dest = tmp_path / "ssd-10.onnx"
    side = tmp_path / "ssd-10.onnx.sha256"
    side.mkdir()  # a folder in the way
    with pytest.raises(UserError) as ei:
        download(server.url("ssd-10.onnx"), dest, size=len(DATA), progress=False)
    msg = _assert_one_line(ei.value)
    assert f"cannot write {side}" in msg
    assert dest.read_bytes() == DATA  # the model itself was verified and kept
    assert not (tmp_path / "ssd-10.onnx.sha256.tmp").exists()


# --------------------------------------------------------------------------- durability


@pytest.fixture
def sync_log(monkeypatch):
    """Record which files were fsynced, and check each os.replace source was synced first."""
    synced: set[tuple[int, int]] = set()
    replaced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def ident(st) -> tuple[int, int]:
        return st.st_dev, st.st_ino

    def fake_fsync(fd):
        synced.add(ident(os.fstat(fd)))
        return real_fsync(fd)

    def fake_replace(src, dst):
        src = Path(src)
        files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        assert files
        for f in files:
            assert ident(f.stat()) in synced, f"{f} renamed into place without fsync"
        replaced.append(src.name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fake_fsync)
    monkeypatch.setattr(os, "replace", fake_replace)
    return replaced


def test_downloads_are_fsynced_before_rename(server, tmp_path, sync_log):
    server.files["ssd-10.onnx"] = DATA
    download(server.url("ssd-10.onnx"), tmp_path / "a" / "ssd-10.onnx", progress=False)
    src = tmp_path / "src.onnx"
    src.write_bytes(DATA)
    download(str(src), tmp_path / "b" / "m.onnx", sha256=_sha(DATA), progress=False)
    part, sha256_file, other = sync_log
    assert (part, other) == ("ssd-10.onnx.part", "m.onnx.part")
    assert sha256_file.startswith(".ssd-10.onnx.sha256.") and sha256_file.endswith(".tmp")  # results.atomic_path


def test_extracted_files_are_fsynced_before_rename(tmp_path, sync_log):
    ann, images, downloads = _coco_paths(tmp_path)
    (tmp_path / "a.zip").write_bytes(ANN_ZIP)
    (tmp_path / "v.zip").write_bytes(IMG_ZIP)
    ensure_coco(ann, images, annotations_url=str(tmp_path / "a.zip"),
                images_url=str(tmp_path / "v.zip"), download_missing=True,
                downloads_dir=downloads, progress=False)
    assert sync_log == ["instances_val2017.json.extracting", "val2017.extracting"]
    assert ann.read_bytes() == ANN_BYTES and sorted(p.name for p in images.iterdir()) == sorted(JPGS)


# --------------------------------------------------------------------------- ensure_model


def test_ensure_model_missing_without_download(tmp_path):
    path = tmp_path / "ssd-12.onnx"
    url = "https://example.invalid/ssd-12.onnx"
    with pytest.raises(UserError) as ei:
        ensure_model(path, url=url, size=1, sha256=None, download_missing=False, variant="ssd-12")
    msg = _assert_one_line(ei.value)
    assert msg == (f"model file {path} not found; run 'make models MODEL=ssd-12' to download it "
                   f"from {url}, or set model.path to an existing copy")
    # model.path overridden (--model /x/int8.onnx): the file name is no variant name
    other = tmp_path / "x" / "int8.onnx"
    with pytest.raises(UserError) as ei:
        ensure_model(other, url=url, size=1, sha256=None, download_missing=False)
    msg = _assert_one_line(ei.value)
    assert msg == (f"model file {other} not found; download it from {url} and save it as {other}, "
                   f"or set model.path to an existing copy")
    assert "MODEL=" not in msg
    with pytest.raises(UserError, match="MODEL=ssd-12-int8'"):
        ensure_model(other, url=url, size=1, sha256=None, download_missing=False,
                     variant="ssd-12-int8")
    with pytest.raises(UserError) as ei:
        ensure_model(path, url=None, size=1, sha256=None, download_missing=True)
    msg = _assert_one_line(ei.value)
    assert str(path) in msg and "no download URL" in msg and "model.path" in msg


def test_ensure_model_downloads_when_asked(server, tmp_path):
    server.files["ssd-12.onnx"] = DATA
    path = tmp_path / "models" / "ssd-12.onnx"
    out = ensure_model(path, url=server.url("ssd-12.onnx"), size=len(DATA), sha256=_sha(DATA),
                       download_missing=True, progress=False)
    assert out == path and path.read_bytes() == DATA
    n = len(server.requests)
    ensure_model(path, url=server.url("ssd-12.onnx"), size=len(DATA), sha256=_sha(DATA),
                 download_missing=True, progress=False)
    assert len(server.requests) == n


def test_ensure_model_existing_mismatch(tmp_path):
    path = tmp_path / "ssd-12.onnx"
    path.write_bytes(DATA)
    want = "5ec1e058e666ef980a6213ac40088877865aafb2b6676b9af204b3828e4bb9d5"
    with pytest.raises(UserError) as ei:
        ensure_model(path, url=None, size=len(DATA), sha256=want, download_missing=True,
                     config_key="models.ssd-12.path")
    msg = _assert_one_line(ei.value)
    assert str(path) in msg and want in msg and _sha(DATA) in msg
    assert "delete it" in msg and "models.ssd-12.path" in msg
    assert path.read_bytes() == DATA  # never deleted behind the user's back
    with pytest.raises(UserError, match=f"is {len(DATA)} bytes, expected 7"):
        ensure_model(path, url=None, size=7, sha256=None, download_missing=False)
    assert ensure_model(path, url=None, size=len(DATA), sha256=_sha(DATA),
                        download_missing=False) == path


# --------------------------------------------------------------------------- ensure_coco

ANN = {
    "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 8, "height": 6},
               {"id": 2, "file_name": "000000000002.jpg", "width": 8, "height": 6}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2],
                     "area": 6.0, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "person"}],
}


def _jpg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


ANN_BYTES = json.dumps(ANN).encode()
JPGS = {"000000000001.jpg": _jpg((255, 0, 0)), "000000000002.jpg": _jpg((0, 0, 255))}
ANN_ZIP = _zip({"annotations/instances_val2017.json": ANN_BYTES,
                "annotations/captions_val2017.json": b"{}"})
IMG_ZIP = _zip({"val2017/": b"", **{f"val2017/{k}": v for k, v in JPGS.items()}})


def _coco_paths(tmp_path: Path):
    root = tmp_path / "data" / "coco"
    return root / "annotations" / "instances_val2017.json", root / "val2017", tmp_path / "dl"


def _served_coco(server, tmp_path: Path):
    """(annotation path, image dir, downloads dir, ensure_coco keyword arguments) with both zips served."""
    server.files["annotations/annotations_trainval2017.zip"] = ANN_ZIP
    server.files["zips/val2017.zip"] = IMG_ZIP
    ann, images, downloads = _coco_paths(tmp_path)
    kwargs = dict(annotations_url=server.url("annotations/annotations_trainval2017.zip"),
                  images_url=server.url("zips/val2017.zip"), download_missing=True,
                  downloads_dir=downloads, progress=False)
    return ann, images, downloads, kwargs


def test_ensure_coco_end_to_end(server, tmp_path):
    ann, images, downloads, kwargs = _served_coco(server, tmp_path)
    ensure_coco(ann, images, **kwargs)
    assert ann.read_bytes() == ANN_BYTES
    assert sorted(p.name for p in images.iterdir()) == sorted(JPGS)
    for name, data in JPGS.items():
        assert (images / name).read_bytes() == data
    assert sorted(p.name for p in ann.parent.iterdir()) == ["instances_val2017.json"]
    assert sorted(p.name for p in images.parent.iterdir()) == ["annotations", "val2017"]
    assert (downloads / "val2017.zip").read_bytes() == IMG_ZIP
    n = len(server.requests)
    ensure_coco(ann, images, **kwargs)  # already there: no network
    assert len(server.requests) == n


def test_ensure_coco_resumes_zip_download(server, tmp_path):
    server.files["zips/val2017.zip"] = IMG_ZIP
    server.drop_after = len(IMG_ZIP) // 2
    ann, images, downloads = _coco_paths(tmp_path)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    kwargs = dict(annotations_url=None, images_url=server.url("zips/val2017.zip"),
                  download_missing=True, downloads_dir=downloads, progress=False)
    with pytest.raises(UserError, match="interrupted"):
        ensure_coco(ann, images, **kwargs)
    assert not images.exists()
    server.drop_after = None
    ensure_coco(ann, images, **kwargs)
    assert server.requests[-1]["range"] == f"bytes={len(IMG_ZIP) // 2}-"
    assert sorted(p.name for p in images.iterdir()) == sorted(JPGS)


def test_ensure_coco_missing_without_download(tmp_path):
    ann, images, downloads = _coco_paths(tmp_path)
    ann_url = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
    img_url = "http://images.cocodataset.org/zips/val2017.zip"
    with pytest.raises(UserError) as ei:
        ensure_coco(ann, images, annotations_url=ann_url, images_url=img_url,
                    download_missing=False, downloads_dir=downloads, progress=False)
    msg = _assert_one_line(ei.value)
    for part in (str(ann), str(images), ann_url, img_url, "dataset.annotations",
                 "dataset.images", "annotations/instances_val2017.json"):
        assert part in msg
    images.mkdir(parents=True)
    with pytest.raises(UserError) as ei:
        ensure_coco(ann, images, annotations_url=None, images_url=img_url,
                    download_missing=True, downloads_dir=downloads, progress=False)
    msg = _assert_one_line(ei.value)
    assert str(ann) in msg and "dataset.annotations" in msg and "dataset.images" not in msg
    assert not downloads.exists()


def test_ensure_coco_corrupt_zip(server, tmp_path):
    server.files["zips/val2017.zip"] = b"this is not a zip file" * 100
    ann, images, downloads = _coco_paths(tmp_path)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    with pytest.raises(UserError) as ei:
        ensure_coco(ann, images, annotations_url=None, images_url=server.url("zips/val2017.zip"),
                    download_missing=True, downloads_dir=downloads, progress=False)
    msg = _assert_one_line(ei.value)
    assert "not a valid zip" in msg and "deleted" in msg and "dataset.images" in msg
    assert not (downloads / "val2017.zip").exists() and not images.exists()


def test_ensure_coco_bad_crc_leaves_no_half_folder(server, tmp_path):
    good = _zip({f"val2017/{k}": v for k, v in JPGS.items()}, zipfile.ZIP_STORED)
    second = JPGS["000000000002.jpg"]
    at = good.rindex(second) + len(second) // 2  # flip a byte inside the 2nd member's data
    server.files["zips/val2017.zip"] = good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1:]
    ann, images, downloads = _coco_paths(tmp_path)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    with pytest.raises(UserError, match="not a valid zip"):
        ensure_coco(ann, images, annotations_url=None, images_url=server.url("zips/val2017.zip"),
                    download_missing=True, downloads_dir=downloads, progress=False)
    assert sorted(p.name for p in images.parent.iterdir()) == ["annotations"]


def test_ensure_coco_zip_without_member_and_unsafe_names(tmp_path):
    ann, images, downloads = _coco_paths(tmp_path)
    images.mkdir(parents=True)
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(_zip({"annotations/other.json": b"{}"}))
    with pytest.raises(UserError, match="has no annotations/instances_val2017.json"):
        ensure_coco(ann, images, annotations_url=str(wrong), images_url=None,
                    download_missing=True, downloads_dir=downloads, progress=False)
    assert wrong.exists()  # a local zip is never deleted
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    images.rmdir()
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip({"val2017/ok.jpg": b"x", "val2017/../../escape.jpg": b"x"}))
    with pytest.raises(UserError, match="unsafe member"):
        ensure_coco(ann, images, annotations_url=None, images_url=evil.as_uri(),
                    download_missing=True, downloads_dir=downloads, progress=False)
    assert not images.exists() and not (tmp_path / "escape.jpg").exists()


def test_ensure_coco_from_local_zips(tmp_path):
    ann, images, downloads = _coco_paths(tmp_path)
    (tmp_path / "a.zip").write_bytes(ANN_ZIP)
    (tmp_path / "v.zip").write_bytes(IMG_ZIP)
    ensure_coco(ann, images, annotations_url=(tmp_path / "a.zip").as_uri(),
                images_url=str(tmp_path / "v.zip"), download_missing=True,
                downloads_dir=downloads, progress=False)
    assert ann.read_bytes() == ANN_BYTES
    assert sorted(p.name for p in images.iterdir()) == sorted(JPGS)
    assert not downloads.exists()  # local zips are read in place


def test_download_without_any_length_or_sha256_is_refused(server, tmp_path):
    # No size, no sha256, no Content-Length: HTTP cannot tell a cut from the end, so nothing
    # is downloaded or installed (issue 13, item 15), even when this time the body is complete.
    server.files["zips/val2017.zip"] = IMG_ZIP
    server.omit_length = True
    ann, images, downloads = _coco_paths(tmp_path)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    kwargs = dict(annotations_url=None, images_url=server.url("zips/val2017.zip"),
                  download_missing=True, downloads_dir=downloads, progress=False)
    for drop_after in (len(IMG_ZIP) // 2, None):
        server.drop_after = drop_after
        with pytest.raises(UserError) as ei:
            ensure_coco(ann, images, **kwargs)
        msg = _assert_one_line(ei.value)
        assert "does not say how long" in msg and "dataset.images" in msg and "val2017.zip" in msg
        assert not images.exists() and not (downloads / "val2017.zip").exists()
    dest = tmp_path / "m.zip"
    download(server.url("zips/val2017.zip"), dest, sha256=hashlib.sha256(IMG_ZIP).hexdigest(), progress=False)
    assert dest.read_bytes() == IMG_ZIP  # a sha256 makes the same download verifiable

# --------------------------------------------------------------------------- issue 13: model identity, zip limits


def _external_data_model(path: Path) -> Path:
    """A small ONNX model whose initializer lives in the external data file ``weights.data``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.data", size_threshold=0)
    return path


def test_model_sha256_covers_external_data(tmp_path):
    """Item 3 (a): swapping the .data file changes the model's sha256."""
    from faults import swap_bytes

    model = _external_data_model(tmp_path / "m.onnx")
    data = tmp_path / "weights.data"
    assert model_info.external_data_files(model) == ["weights.data"]
    before = model_info.model_sha256(model)
    assert before != sha256_of(model)
    swap_bytes(data, data.read_bytes()[::-1])
    assert model_info.model_sha256(model) != before
    data.unlink()
    with pytest.raises(UserError, match=f"{model}: its external data file {data} is missing"):
        model_info.model_sha256(model)


def test_model_sha256_of_a_single_file_model_is_its_file_sha256(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(DATA)
    assert model_info.external_data_files(model) == [] and model_info.model_sha256(model) == sha256_of(model)


def _patch_central_directory(data: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite bytes at ``offset`` of every central directory entry (flags: 8, method: 10)."""
    out = bytearray(data)
    position = out.find(b"PK\x01\x02")
    while position != -1:
        out[position + offset:position + offset + len(value)] = value
        position = out.find(b"PK\x01\x02", position + 4)
    return bytes(out)


@pytest.mark.parametrize("zip_bytes, problem", [
    (_patch_central_directory(IMG_ZIP, 8, b"\x01\x00"), "is encrypted"),
    (_patch_central_directory(IMG_ZIP, 10, b"\x63\x00"), "unsupported compression method (99)"),
    (_zip({"val2017/000000000001.jpg": bytes(8 << 20)}), "would expand"),
], ids=["encrypted", "compression", "bomb"])
def test_unextractable_zips_are_refused_and_kept(tmp_path, zip_bytes, problem):
    """Items 13 and 15: one line, nothing extracted, the zip kept (downloading again gives the same)."""
    zip_path = tmp_path / "val2017.zip"
    zip_path.write_bytes(zip_bytes)
    ann, images, downloads = _coco_paths(tmp_path)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(ANN_BYTES)
    with pytest.raises(UserError) as ei:
        ensure_coco(ann, images, annotations_url=None, images_url=str(zip_path), download_missing=True,
                    downloads_dir=downloads, progress=False)
    msg = _assert_one_line(ei.value)
    assert problem in msg and "the zip is kept" in msg and "dataset.images" in msg
    assert not images.exists() and not images.with_name("val2017.extracting").exists()
    assert zip_path.read_bytes() == zip_bytes


def test_zip_total_size_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.archive, "ZIP_MAX_TOTAL_BYTES", 10)
    zip_path = tmp_path / "a.zip"
    zip_path.write_bytes(ANN_ZIP)
    ann, images, downloads = _coco_paths(tmp_path)
    images.mkdir(parents=True)
    with pytest.raises(UserError, match="more than the 10 allowed"):
        ensure_coco(ann, images, annotations_url=str(zip_path), images_url=None, download_missing=True,
                    downloads_dir=downloads, progress=False)
    assert not ann.exists()


def test_ensure_coco_checks_the_pinned_zip_size_and_sha256(server, tmp_path):
    ann, images, downloads, kwargs = _served_coco(server, tmp_path)
    with pytest.raises(UserError, match="sha256") as info:
        ensure_coco(ann, images, annotations_zip=(len(ANN_ZIP), "0" * 64), **kwargs)
    _assert_one_line(info.value)
    assert not ann.exists() and not (downloads / "annotations_trainval2017.zip").exists()
    ensure_coco(ann, images, annotations_zip=(len(ANN_ZIP), _sha(ANN_ZIP)), images_zip=(len(IMG_ZIP), _sha(IMG_ZIP)),
                **kwargs)
    assert ann.read_bytes() == ANN_BYTES
