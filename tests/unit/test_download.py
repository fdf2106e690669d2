"""Downloads against a scripted loopback HTTP server: resume, checksums, 404, offline, mirrors, archives."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import zipfile

import pytest

from pertpipe.data.download import fetch, http_download
from pertpipe.data.registry import Entry
from pertpipe.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def entry(url, sha=SHA, **kw):
    return Entry(name=kw.pop("name", "thing"), kind="resource", urls=(url,), sha256=sha,
                 file=kw.pop("file", "thing.bin"), **kw)


def test_resume_after_dropped_connection(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    file_server.drop_after["/data.bin"] = 300_000
    dest = tmp_path / "data.bin"
    digest = http_download(file_server.url("data.bin"), dest, sha256=SHA, retries=3, backoff=0.01)
    assert digest == SHA and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    # First request without Range; the retry asked only for the missing bytes.
    assert file_server.requests[0] == ("/data.bin", None)
    path, rng = file_server.requests[1]
    resumed_at = int(rng.removeprefix("bytes=").rstrip("-"))
    assert path == "/data.bin" and 0 < resumed_at <= 300_000  # the bytes already on disk were not fetched again


def test_resume_from_existing_part_file(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    http_download(file_server.url("data.bin"), tmp_path / "data.bin", sha256=SHA, backoff=0.01)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert file_server.requests == [("/data.bin", "bytes=1000-")]


def test_server_ignoring_range_restarts_cleanly(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    file_server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"garbage" * 10)
    http_download(file_server.url("data.bin"), tmp_path / "data.bin", sha256=SHA, backoff=0.01)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_retry_on_503_then_success(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    file_server.fail_first["/data.bin"] = 2
    http_download(file_server.url("data.bin"), tmp_path / "data.bin", sha256=SHA, retries=3, backoff=0.01)
    assert len(file_server.requests) == 3


def test_checksum_mismatch_deletes_part_and_says_so(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    dest = tmp_path / "out" / "thing.bin"
    with pytest.raises(DownloadError) as err:
        fetch(entry(file_server.url("data.bin"), sha="0" * 64), dest, backoff=0.01)
    msg = str(err.value)
    assert "sha256 mismatch" in msg and "deleted" in msg and file_server.url("data.bin") in msg
    assert not dest.exists()
    assert not list(dest.parent.rglob("*.part"))


def test_404_names_the_url(file_server, tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch(entry(file_server.url("missing.bin")), tmp_path / "thing.bin", backoff=0.01)
    assert "404" in str(err.value) and file_server.url("missing.bin") in str(err.value)
    assert not (tmp_path / "thing.bin").exists()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_without_mirror_names_url_path_and_mirror_option(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/devel.h5ad"
    dest = tmp_path / "perturbench_devel" / "devel.h5ad"
    e = entry(url, name="perturbench_devel", file="devel.h5ad", mirror_path="perturbench/devel.h5ad")
    with pytest.raises(DownloadError) as err:
        fetch(e, dest, retries=1, backoff=0.01, timeout=2)
    msg = str(err.value)
    assert url in msg and str(dest) in msg and "`mirror:`" in msg and "perturbench/devel.h5ad" in msg


def test_mirror_folder_is_tried_first_and_checked(file_server, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    (mirror / "sub" / "x.bin").write_bytes(PAYLOAD)
    e = entry(file_server.url("never.bin"), mirror_path="sub/x.bin", mirror_sha256=SHA)
    man = fetch(e, tmp_path / "dl" / "thing.bin", mirror=str(mirror))
    assert (tmp_path / "dl" / "thing.bin").read_bytes() == PAYLOAD
    assert man["origin"] == "mirror:sub/x.bin" and man["checked_against"] == "registry"
    assert file_server.requests == []  # upstream never contacted
    # A corrupted mirror copy is refused by checksum; upstream is then tried (and 404s here).
    (mirror / "sub" / "x.bin").write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(DownloadError) as err:
        fetch(e, tmp_path / "dl2" / "thing.bin", mirror=str(mirror), backoff=0.01)
    assert "sha256 mismatch for mirror file" in str(err.value) and "404" in str(err.value)


def test_http_mirror(file_server, tmp_path):
    file_server.files["/mirror/sub/x.bin"] = PAYLOAD
    e = entry("http://127.0.0.1:9/never", mirror_path="sub/x.bin", mirror_sha256=SHA)
    fetch(e, tmp_path / "thing.bin", mirror=file_server.url("mirror"))
    assert (tmp_path / "thing.bin").read_bytes() == PAYLOAD


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_member_extraction_and_archive_reuse(file_server, tmp_path):
    blob = _zip_bytes({"set/a.h5ad": b"AAA", "set/gene_names.csv": b"G1\nG2\n"})
    file_server.files["/set.zip"] = blob
    sha = hashlib.sha256(blob).hexdigest()
    cache = tmp_path / "_archives"
    a = Entry(name="a", kind="resource", urls=(file_server.url("set.zip"),), sha256=sha, archive="zip",
              member="set/a.h5ad", file="a.h5ad")
    g = Entry(name="g", kind="resource", urls=(file_server.url("set.zip"),), sha256=sha, archive="zip",
              member="gene_names.csv", file="gene_names.csv")  # matched by basename
    fetch(a, tmp_path / "a" / "a.h5ad", cache_dir=cache)
    fetch(g, tmp_path / "g" / "gene_names.csv", cache_dir=cache)
    assert (tmp_path / "a" / "a.h5ad").read_bytes() == b"AAA"
    assert (tmp_path / "g" / "gene_names.csv").read_bytes() == b"G1\nG2\n"
    assert len(file_server.requests) == 1  # the archive was downloaded once and reused


def test_tar_gz_member_extraction(file_server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg/data/x.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    file_server.files["/pkg.tar.gz"] = buf.getvalue()
    e = Entry(name="t", kind="resource", urls=(file_server.url("pkg.tar.gz"),), sha256=None, archive="tar.gz",
              member="pkg/data/x.txt", file="x.txt")
    fetch(e, tmp_path / "x.txt")
    assert (tmp_path / "x.txt").read_bytes() == b"hello"


def test_corrupt_archive_is_reported_and_removed(file_server, tmp_path):
    file_server.files["/bad.zip"] = b"PK\x03\x04 this is not a zip file at all" * 10
    cache = tmp_path / "_archives"
    e = Entry(name="z", kind="resource", urls=(file_server.url("bad.zip"),), sha256=None, archive="zip",
              member="x.h5ad", file="x.h5ad")
    lock = tmp_path / "lock.json"
    with pytest.raises(DownloadError) as err:
        fetch(e, tmp_path / "x.h5ad", cache_dir=cache, lock_file=lock)
    assert "corrupt archive" in str(err.value)
    assert not (tmp_path / "x.h5ad").exists()
    assert not any(p.suffix == ".zip" for p in cache.iterdir())  # deleted, so a re-run downloads again
    assert not lock.exists()  # a corrupt file's checksum is never recorded


def test_null_checksum_is_locked_at_first_download(file_server, tmp_path):
    file_server.files["/v.bin"] = PAYLOAD
    lock = tmp_path / "datasets.lock.json"
    e = entry(file_server.url("v.bin"), sha=None, name="vv")
    man = fetch(e, tmp_path / "a" / "thing.bin", lock_file=lock)
    assert json.loads(lock.read_text()) == {"vv": {file_server.url("v.bin"): SHA}}
    assert man["sha256"] == SHA
    # Same content again: fine. Changed upstream content: refused, naming the lock file.
    fetch(e, tmp_path / "b" / "thing.bin", lock_file=lock)
    file_server.files["/v.bin"] = PAYLOAD[::-1]
    with pytest.raises(DownloadError) as err:
        fetch(e, tmp_path / "c" / "thing.bin", lock_file=lock)
    assert "lock file" in str(err.value) and not (tmp_path / "c" / "thing.bin").exists()


def test_stale_cached_download_is_fetched_again(file_server, tmp_path):
    file_server.files["/data.bin"] = PAYLOAD
    url = file_server.url("data.bin")
    cache = tmp_path / "cache"
    cache.mkdir()
    key = hashlib.sha1(url.encode()).hexdigest()[:12]
    (cache / f"{key}-data.bin").write_bytes(b"an older, different file")
    man = fetch(entry(url), tmp_path / "out" / "thing.bin", cache_dir=cache, backoff=0.01)
    assert (tmp_path / "out" / "thing.bin").read_bytes() == PAYLOAD and man["origin"] == url
    assert len(file_server.requests) == 1


def test_a_users_entry_with_a_wrong_sha256_says_where_to_fix_it_and_leaves_no_lock(tmp_path):
    """A config `datasets:` entry whose file:// URL does not match its sha256: the message points at the user's
    entry (not the registry file), calls the file what it is, adds no offline guess, and no lock file is left."""
    src = tmp_path / "my_screen.h5ad"
    src.write_bytes(PAYLOAD)
    e = Entry(name="my_screen", kind="dataset", urls=(src.as_uri(),), sha256="0" * 64, file="my_screen.h5ad",
              user=True)
    dest = tmp_path / "downloads" / "my_screen" / "my_screen.h5ad"
    with pytest.raises(DownloadError) as err:
        fetch(e, dest, lock_file=tmp_path / "lock.json")
    msg = str(err.value)
    assert f"sha256 mismatch for local file (file:// URL) {src}: expected {'0' * 64}, got {SHA}" in msg
    assert "correct sha256 in your config's `datasets: my_screen` entry" in msg
    assert "resources/datasets.yaml" not in msg and "mirror file" not in msg and "Offline?" not in msg
    assert not list(tmp_path.rglob("*.lock")) and not dest.exists()
    registry = Entry(name="thing", kind="resource", urls=(src.as_uri(),), sha256="0" * 64, file="thing.bin")
    with pytest.raises(DownloadError, match=r"the registry entry 'thing' \(resources/datasets.yaml\)"):
        fetch(registry, tmp_path / "downloads" / "thing" / "thing.bin")
