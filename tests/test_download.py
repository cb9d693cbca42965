"""Fetching, verifying and extracting the WFLW archives (hrnet_lib.data.download, `data download`).

Only loopback addresses are used: a small Range-capable HTTP server on 127.0.0.1 that the fixture stops,
and an unused 127.0.0.1 port for the no-network path.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import random
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from hrnet_lib.data import cli, download, wflw
from hrnet_lib.model import pretrained

REPO = Path(__file__).resolve().parents[1]


class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 with HTTP Range support.

    `cut_after` makes the next response stop after that many body bytes (a broken transfer);
    `ignore_range` answers every request with the whole file (status 200); `requests` records
    (path, Range header) of each request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_type = "application/gzip"
        self.cut_after: int | None = None
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.requests.append((self.path, self.headers.get("Range")))
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                range_header = self.headers.get("Range")
                if range_header and not owner.ignore_range:
                    start = int(range_header.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if owner.cut_after is not None:
                    body, owner.cut_after = body[: owner.cut_after], None
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def unused_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/WFLW_annotations.tar.gz"


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ANNOTATIONS = {
    "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt": b"1 2 3\n" * 2000,
    "WFLW_annotations/list_98pt_test/list_98pt_test.txt": b"4 5 6\n",
}


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"archives": entries}))
    return path


def entry(name: str, urls: list[str], data: bytes | None = None, known: bool = True, to: str = "") -> dict:
    return {
        "name": name,
        "urls": urls,
        "sha256": hashlib.sha256(data).hexdigest() if data is not None and known else None,
        "size": len(data) if data is not None and known else None,
        "extracts_to": to or name.split(".")[0],
    }


# ---------------------------------------------------------------- fetch


def test_fetch_whole_file(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    server.files["/a.tar.gz"] = data
    dest = download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "a.tar.gz.part").exists()
    assert server.requests == [("/a.tar.gz", None)]


def test_fetch_resumes_a_partial_file(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    server.files["/a.tar.gz"] = data
    (tmp_path / "a.tar.gz.part").write_bytes(data[:300_000])
    download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data
    assert server.requests == [("/a.tar.gz", "bytes=300000-")]


def test_interrupted_transfer_keeps_part_and_resumes(server: Server, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    server.files["/a.tar.gz"] = data
    server.cut_after = 123_456
    with pytest.raises(download.DownloadError, match="resume"):
        download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    part = tmp_path / "a.tar.gz.part"
    assert part.read_bytes() == data[:123_456]
    assert not (tmp_path / "a.tar.gz").exists()
    download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data
    assert server.requests[-1] == ("/a.tar.gz", "bytes=123456-")


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    server.files["/a.tar.gz"] = data
    server.ignore_range = True
    (tmp_path / "a.tar.gz.part").write_bytes(b"stale bytes from another file")
    download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data


def test_complete_part_file_answered_416(server: Server, tmp_path: Path) -> None:
    data = b"x" * 1000
    server.files["/a.tar.gz"] = data
    (tmp_path / "a.tar.gz.part").write_bytes(data)
    download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert (tmp_path / "a.tar.gz").read_bytes() == data


def test_web_page_instead_of_archive(server: Server, tmp_path: Path) -> None:
    server.files["/a.tar.gz"] = b"<html>sign in</html>"
    server.content_type = "text/html"
    with pytest.raises(download.DownloadError, match="web page"):
        download.fetch(server.url("/a.tar.gz"), tmp_path / "a.tar.gz", progress=False)
    assert not (tmp_path / "a.tar.gz").exists()


def test_http_error_and_no_server(server: Server, tmp_path: Path) -> None:
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(server.url("/missing.tar.gz"), tmp_path / "m.tar.gz", progress=False)
    with pytest.raises(download.DownloadError, match="127.0.0.1"):
        download.fetch(unused_port_url(), tmp_path / "m.tar.gz", timeout=5, progress=False)


# ---------------------------------------------------------------- verify and extract


def test_verify(tmp_path: Path) -> None:
    path = tmp_path / "a.tar.gz"
    path.write_bytes(b"hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    logged: list[str] = []
    assert download.verify(path, download.Archive("a.tar.gz", (), digest, 5, "a"), logged.append)
    assert not download.verify(path, download.Archive("a.tar.gz", (), None, None, "a"), logged.append)
    assert digest in logged[-1] and "NOT verified" in logged[-1]
    with pytest.raises(download.DownloadError, match="does not match"):
        download.verify(path, download.Archive("a.tar.gz", (), "0" * 64, None, "a"), logged.append)
    with pytest.raises(download.DownloadError, match="size 5 bytes"):
        download.verify(path, download.Archive("a.tar.gz", (), digest, 6, "a"), logged.append)


def test_extract_atomically(tmp_path: Path) -> None:
    archive = tmp_path / "WFLW_annotations.tar.gz"
    archive.write_bytes(make_tar(ANNOTATIONS))
    root = tmp_path / "root"
    target = download.extract(archive, root, "WFLW_annotations")
    assert target == root / "WFLW_annotations"
    for name, data in ANNOTATIONS.items():
        assert (root / name).read_bytes() == data
    assert sorted(p.name for p in root.iterdir()) == ["WFLW_annotations"]  # no temporary left behind


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"other/x.txt": b"x"}, "expected a top-level WFLW_annotations/"),
        ({"WFLW_annotations/../../evil.txt": b"x"}, "cannot extract"),
    ],
)
def test_extract_rejects_bad_archives(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar(files))
    root = tmp_path / "root"
    with pytest.raises(download.DownloadError, match=message):
        download.extract(archive, root, "WFLW_annotations")
    assert list(root.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_extract_broken_archive(tmp_path: Path, keep: float) -> None:
    """A cut archive is refused, even when only the gzip trailer is gone (tarfile alone would accept it)."""
    files = {**ANNOTATIONS, "WFLW_annotations/noise.bin": random.Random(0).randbytes(50_000)}
    data = make_tar(files)
    archive = tmp_path / "WFLW_annotations.tar.gz"
    archive.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(download.DownloadError, match="cannot extract"):
        download.extract(archive, tmp_path / "root", "WFLW_annotations")
    assert list((tmp_path / "root").iterdir()) == []


# ---------------------------------------------------------------- whole command


def test_download_dataset_from_server(server: Server, tmp_path: Path) -> None:
    data = make_tar(ANNOTATIONS)
    server.files["/WFLW_annotations.tar.gz"] = data
    urls = [unused_port_url(), server.url("/WFLW_annotations.tar.gz")]  # the first mirror is down
    manifest = write_manifest(tmp_path / "m.json", [entry("WFLW_annotations.tar.gz", urls, data)])
    root = tmp_path / "WFLW"
    logged: list[str] = []
    download.download_dataset(root, manifest, timeout=5, log=logged.append)
    assert (root / next(iter(ANNOTATIONS))).read_bytes() == next(iter(ANNOTATIONS.values()))
    assert (root / download.ARCHIVE_DIR / "WFLW_annotations.tar.gz").read_bytes() == data
    assert any("sha256 verified" in line for line in logged)
    n_requests = len(server.requests)
    download.download_dataset(root, manifest, timeout=5, log=logged.append)
    assert "already present" in logged[-1] and len(server.requests) == n_requests


def test_download_rejects_wrong_hash_and_extracts_nothing(server: Server, tmp_path: Path) -> None:
    data = make_tar(ANNOTATIONS)
    server.files["/WFLW_annotations.tar.gz"] = data
    bad = entry("WFLW_annotations.tar.gz", [server.url("/WFLW_annotations.tar.gz")], data)
    bad["sha256"] = "f" * 64
    manifest = write_manifest(tmp_path / "m.json", [bad])
    with pytest.raises(download.DownloadError, match="does not match"):
        download.download_dataset(tmp_path / "WFLW", manifest, log=lambda _: None)
    assert not (tmp_path / "WFLW" / "WFLW_annotations").exists()


def test_local_archive_without_network(tmp_path: Path, capsys) -> None:
    data = make_tar(ANNOTATIONS)
    archive = tmp_path / "have" / "WFLW_annotations.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(data)
    manifest = write_manifest(
        tmp_path / "m.json", [entry("WFLW_annotations.tar.gz", [unused_port_url()], data, known=False)]
    )
    root = tmp_path / "WFLW"
    argv = ["download", "--root", str(root), "--manifest", str(manifest), "--archive", str(archive)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(data).hexdigest() in out and "NOT verified" in out
    assert (root / "WFLW_annotations/list_98pt_test/list_98pt_test.txt").read_bytes() == b"4 5 6\n"


def test_archive_name_must_be_in_manifest(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "something.tar.gz"
    archive.write_bytes(b"x")
    manifest = write_manifest(tmp_path / "m.json", [entry("WFLW_annotations.tar.gz", [unused_port_url()])])
    argv = ["download", "--root", str(tmp_path / "r"), "--manifest", str(manifest), "--archive", str(archive)]
    assert cli.main(argv) == 1
    assert "not one of the manifest's" in capsys.readouterr().err


def test_no_network_says_what_to_put_where(tmp_path: Path, capsys) -> None:
    url = unused_port_url()
    manifest = write_manifest(
        tmp_path / "m.json",
        [entry("WFLW_annotations.tar.gz", [url]), entry("WFLW_images.tar.gz", [url])],
    )
    root = tmp_path / "WFLW"
    assert cli.main(["download", "--root", str(root), "--manifest", str(manifest), "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for name, target in (
        ("WFLW_annotations.tar.gz", "WFLW_annotations"),
        ("WFLW_images.tar.gz", "WFLW_images"),
    ):
        assert str(root / download.ARCHIVE_DIR / name) in err
        assert f"{root / target}/" in err


def test_bad_manifest(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.json", [{"name": "a.tar.gz", "urls": []}])
    with pytest.raises(download.DownloadError, match=r"archives\[0\]"):
        download.load_manifest(manifest)
    bad_hash = entry("a.tar.gz", [])
    bad_hash["sha256"] = "not-a-hash"
    with pytest.raises(download.DownloadError, match="sha256"):
        download.load_manifest(write_manifest(tmp_path / "m.json", [bad_hash]))


def test_repo_manifest() -> None:
    """data/manifest.json names the two official archives, each extracting to its official directory."""
    archives = download.load_manifest(REPO / "data" / "manifest.json")
    assert {(a.name, a.extracts_to) for a in archives} == {
        ("WFLW_annotations.tar.gz", wflw.ANNOTATION_DIR),
        ("WFLW_images.tar.gz", wflw.IMAGE_DIR),
    }
    assert all(a.urls and all(url.startswith("https://") for url in a.urls) for a in archives)


# ---------------------------------------------------------------- ImageNet weights


def imagenet_like_weights(with_head: bool = False) -> bytes:
    """Our W18 backbone's tensors plus an ImageNet classifier's extra keys, as a torch.save'd file."""
    import torch

    from hrnet_lib.model.hrnet import build_model

    state = {
        k: v for k, v in build_model("hrnetv2_w18").state_dict().items() if with_head or k[:5] != "head."
    }
    if not with_head:
        state["classifier.weight"] = torch.zeros(1000, 2048)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def weights_entry(url: str) -> download.Archive:
    return download.Archive("hrnetv2_w18-00eb2006.pth", (url,), None, None, "")


def test_weights_are_checked_then_put_in_place(server: Server, tmp_path: Path) -> None:
    server.files["/w.pth"] = data = imagenet_like_weights()
    dest = tmp_path / "data" / "hrnetv2_w18-00eb2006.pth"
    lines: list[str] = []
    assert pretrained.download_weights(dest, weights_entry(server.url("/w.pth")), log=lines.append) == dest
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no staging file left
    assert any("NOT verified" in line for line in lines)  # the manifest has no hash for it
    assert any("imagenet" in line and "classifier" in line for line in lines)  # the load report
    # A file already there is kept, without asking the server again.
    requests = len(server.requests)
    pretrained.download_weights(dest, weights_entry(server.url("/w.pth")), log=lines.append)
    assert len(server.requests) == requests


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"<not a checkpoint>" * 100, "not usable"), ("with_head", "not an ImageNet backbone")],
)
def test_weights_that_do_not_load_into_the_backbone_are_deleted(
    server: Server, tmp_path: Path, content: bytes | str, message: str
) -> None:
    server.files["/w.pth"] = imagenet_like_weights(with_head=True) if content == "with_head" else content
    dest = tmp_path / "hrnetv2_w18-00eb2006.pth"
    with pytest.raises(download.DownloadError, match=message):
        pretrained.download_weights(dest, weights_entry(server.url("/w.pth")), log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_weights_without_network_say_where_to_put_them(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps({"weights": {"name": "w.pth", "urls": [unused_port_url()], "sha256": None, "size": None}})
    )
    dest = tmp_path / "w.pth"
    assert cli.main(["weights", "--out", str(dest), "--manifest", str(manifest), "--timeout", "2"]) == 1
    assert f"put it at {dest}" in capsys.readouterr().err
    assert not dest.exists()


def test_repo_manifest_names_the_imagenet_weights() -> None:
    entry = download.load_weights_entry(REPO / "data" / "manifest.json")
    assert entry.name == "hrnetv2_w18-00eb2006.pth"
    assert entry.urls and all(url.startswith("https://") and url.endswith(entry.name) for url in entry.urls)


def weights_manifest(tmp_path: Path) -> Path:
    """A manifest whose weights URL cannot be reached: any download attempt fails."""
    manifest = tmp_path / "m.json"
    manifest.write_text(
        json.dumps({"weights": {"name": "w.pth", "urls": [unused_port_url()], "sha256": None, "size": None}})
    )
    return manifest


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"junk\n", "not a readable PyTorch checkpoint"), ("with_head", "not an ImageNet backbone")],
)
def test_existing_weights_file_is_checked_and_left_in_place(
    tmp_path: Path, capsys, content: bytes | str, message: str
) -> None:
    dest = tmp_path / "hrnetv2_w18-00eb2006.pth"
    data = imagenet_like_weights(with_head=True) if content == "with_head" else content
    dest.write_bytes(data)
    argv = ["weights", "--out", str(dest), "--manifest", str(weights_manifest(tmp_path)), "--timeout", "2"]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert f"error: {dest} is already there but is not usable (left in place" in err and message in err
    assert "weights are ready" not in out
    assert dest.read_bytes() == data  # the user's file is neither deleted nor replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hrnetv2_w18-00eb2006.pth", "m.json"]


def test_existing_valid_weights_file_is_accepted(tmp_path: Path, capsys) -> None:
    dest = tmp_path / "hrnetv2_w18-00eb2006.pth"
    dest.write_bytes(data := imagenet_like_weights())
    argv = ["weights", "--out", str(dest), "--manifest", str(weights_manifest(tmp_path)), "--timeout", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "imagenet" in out and "classifier" in out  # the load report: it was loaded, not just found
    assert f"ImageNet weights are ready at {dest}" in out
    assert dest.read_bytes() == data


def test_help_names_weights_and_shows_defaults(capsys) -> None:
    from hrnet_lib.__main__ import usage

    assert "ImageNet weights" in usage()
    for argv, default in ((["download", "--help"], "data/WFLW"), (["weights", "--help"], "data/hrnetv2_w18")):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
        assert f"(default: {default}" in help_text
