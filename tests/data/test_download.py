"""Download, verification, resume and import, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from bstrec import DataError, load_dataset
from bstrec.cli import app
from bstrec.data.download import DownloadOptions, download, import_dataset
from tests.data.formats import ML1M, write


def make_zip(files: dict[str, str], top: str | None = "ml-1m") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(f"{top}/{name}" if top else name, text.encode("latin-1"))
    return buf.getvalue()


ARCHIVE = make_zip(ML1M)
MD5 = hashlib.md5(ARCHIVE).hexdigest()


@dataclass
class Server:
    """Serves ``files``; ``cut_after`` drops the first response after that many bytes;
    ``ignore_range`` answers every request with the whole file."""

    files: dict[str, bytes]
    cut_after: int | None = None
    ignore_range: bool = False
    requests: list[dict] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def server():
    state = Server(files={"/ml-1m.zip": ARCHIVE})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and not state.ignore_range:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if state.cut_after is not None:
                payload, state.cut_after = payload[: state.cut_after], None
                self.wfile.write(payload)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def opts(tmp_path, server, **kw) -> DownloadOptions:
    base = {"data_dir": tmp_path, "url": f"{server.base}/ml-1m.zip", "md5": MD5,
            "progress": False}  # fmt: skip
    return DownloadOptions(**{**base, **kw})


def leftovers(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.rglob("*") if ".tmp" in p.name or ".part" in p.name)


def test_download_verifies_unpacks_and_loads_by_name(tmp_path, server):
    res = download("ml-1m", opts(tmp_path, server))
    assert not res.cached and res.downloaded_bytes == len(ARCHIVE)
    assert res.path == tmp_path / "datasets" / "ml-1m"
    assert (res.path / "ratings.dat").is_file()  # the archive's top folder is flattened
    assert (tmp_path / "downloads" / "ml-1m.zip").read_bytes() == ARCHIVE
    assert leftovers(tmp_path) == []
    ds = load_dataset("ml-1m", tmp_path)
    assert ds.name == "ml-1m" and ds.n_interactions == 5


def test_second_call_is_a_cache_hit(tmp_path, server):
    download("ml-1m", opts(tmp_path, server))
    n = len(server.requests)
    res = download("ml-1m", opts(tmp_path, server))
    assert res.cached and res.downloaded_bytes == 0
    assert len(server.requests) == n


def test_verified_archive_is_reused_if_unpacking_was_lost(tmp_path, server):
    res = download("ml-1m", opts(tmp_path, server))
    (res.path / ".bstrec.json").unlink()  # as if interrupted before the marker
    n = len(server.requests)
    again = download("ml-1m", opts(tmp_path, server))
    assert again.cached and len(server.requests) == n
    assert (again.path / ".bstrec.json").is_file()


def test_checksum_failure_deletes_the_temp_file(tmp_path, server):
    with pytest.raises(DataError, match="does not match its checksum") as e:
        download("ml-1m", opts(tmp_path, server, md5="0" * 32))
    assert "deleted it" in str(e.value)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "downloads" / "ml-1m.zip").exists()
    assert not (tmp_path / "datasets" / "ml-1m").exists()


def test_size_mismatch_fails(tmp_path, server):
    with pytest.raises(DataError, match=f"{len(ARCHIVE) + 1:,} bytes"):
        download("ml-1m", opts(tmp_path, server, size=len(ARCHIVE) + 1))
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_range(tmp_path, server):
    half = len(ARCHIVE) // 2
    server.cut_after = half
    with pytest.raises(DataError, match="interrupted.*run the command again to resume"):
        download("ml-1m", opts(tmp_path, server))
    part = tmp_path / "downloads" / "ml-1m.zip.part"
    assert part.stat().st_size == half  # kept for the next call
    res = download("ml-1m", opts(tmp_path, server))
    assert res.resumed_from == half and res.downloaded_bytes == len(ARCHIVE) - half
    assert server.requests[-1]["range"] == f"bytes={half}-"
    assert (tmp_path / "downloads" / "ml-1m.zip").read_bytes() == ARCHIVE
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path, server):
    part = tmp_path / "downloads" / "ml-1m.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE[:100])
    server.ignore_range = True
    res = download("ml-1m", opts(tmp_path, server))
    assert res.resumed_from == 0 and res.downloaded_bytes == len(ARCHIVE)
    assert (tmp_path / "downloads" / "ml-1m.zip").read_bytes() == ARCHIVE


def test_complete_part_is_verified_without_downloading(tmp_path, server):
    part = tmp_path / "downloads" / "ml-1m.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE)
    res = download("ml-1m", opts(tmp_path, server))  # server answers 416
    assert res.downloaded_bytes == 0 and (res.path / "movies.dat").is_file()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_fails_fast_with_instructions(tmp_path):
    t = time.perf_counter()
    with pytest.raises(DataError) as e:
        download("ml-1m", DownloadOptions(data_dir=tmp_path, url=f"http://127.0.0.1:{closed_port()}/ml-1m.zip",
                                          progress=False))  # fmt: skip
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert "bstrec data import" in msg and "c4d9eecfca2ab87c1945afe126590906" in msg
    assert "5,917,549 bytes" in msg
    assert leftovers(tmp_path) == [] and not (tmp_path / "datasets").exists()


def test_offline_cli_exits_nonzero_with_one_line(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/ml-1m.zip"
    result = CliRunner().invoke(
        app, ["data", "download", "ml-1m", "--data-dir", str(tmp_path), "--url", url]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "bstrec data import" in lines[0]


def test_http_error(tmp_path, server):
    with pytest.raises(DataError, match="HTTP 404"):
        download("ml-1m", opts(tmp_path, server, url=f"{server.base}/missing.zip"))


def test_unknown_name(tmp_path):
    with pytest.raises(DataError, match="unknown data set; known: ml-100k, ml-1m"):
        download("ml-2m", DownloadOptions(data_dir=tmp_path))


def test_mirror_env_and_published_md5_sidecar(tmp_path, server, monkeypatch):
    """ml-latest-small has no recorded md5: GroupLens' NAME.zip.md5 is fetched instead."""
    server.files["/ml-latest-small.zip"] = ARCHIVE
    server.files["/ml-latest-small.zip.md5"] = f"MD5 (ml-latest-small.zip) = {MD5}\n".encode()
    monkeypatch.setenv("BSTREC_MIRROR", server.base)
    res = download("ml-latest-small", DownloadOptions(data_dir=tmp_path, progress=False))
    assert (res.path / "ratings.dat").is_file()
    assert [r["path"] for r in server.requests] == ["/ml-latest-small.zip.md5",
                                                    "/ml-latest-small.zip"]  # fmt: skip
    server.files["/ml-latest-small.zip.md5"] = b"MD5 (ml-latest-small.zip) = " + b"f" * 32
    with pytest.raises(DataError, match="does not match"):
        download("ml-latest-small", DownloadOptions(data_dir=tmp_path / "b", progress=False))


def test_zip_slip_is_refused(tmp_path, server):
    evil = make_zip({"../../evil.txt": "x", "ratings.dat": "1::1::1::1\n"}, top=None)
    server.files["/ml-1m.zip"] = evil
    with pytest.raises(DataError, match="outside the archive"):
        download("ml-1m", opts(tmp_path, server, md5=hashlib.md5(evil).hexdigest()))
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path / "datasets" / "ml-1m").exists()


def test_cli_download_twice(tmp_path, server):
    args = ["data", "download", "ml-1m", "--data-dir", str(tmp_path),
            "--url", f"{server.base}/ml-1m.zip", "--md5", MD5]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "downloaded and verified" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "already in" in second.output


# ---------------------------------------------------------------- import
def test_import_zip_then_load_by_name(tmp_path):
    z = tmp_path / "mine.zip"
    z.write_bytes(ARCHIVE)
    dest = import_dataset(z, data_dir=tmp_path / "d")
    assert dest == tmp_path / "d" / "datasets" / "mine"
    assert load_dataset("mine", tmp_path / "d").n_interactions == 5


def test_import_folder_with_nested_subfolder(tmp_path):
    write(tmp_path / "unpacked" / "ml-1m", ML1M)
    result = CliRunner().invoke(
        app, ["data", "import", str(tmp_path / "unpacked"), "--name", "ml-1m",
              "--data-dir", str(tmp_path / "d")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "datasets" / "ml-1m" / "ratings.dat").is_file()
    info = CliRunner().invoke(app, ["data", "info", "ml-1m", "--data-dir", str(tmp_path / "d"),
                                    "--json"])  # fmt: skip
    assert info.exit_code == 0 and '"interactions": 5' in info.output
    # a later download of the same name is then a cache hit, offline or not
    assert download("ml-1m", DownloadOptions(data_dir=tmp_path / "d")).cached


def test_import_known_name_with_wrong_md5_is_refused(tmp_path):
    z = tmp_path / "ml-1m.zip"
    z.write_bytes(ARCHIVE)  # not the real GroupLens archive
    with pytest.raises(DataError, match="not the published c4d9eecf"):
        import_dataset(z, data_dir=tmp_path / "d")
    assert not (tmp_path / "d" / "datasets").exists() or not any(
        (tmp_path / "d" / "datasets").iterdir()
    )
    assert import_dataset(z, name="my-ml1m", data_dir=tmp_path / "d").name == "my-ml1m"


def test_import_of_bad_data_leaves_nothing(tmp_path):
    z = tmp_path / "bad.zip"
    z.write_bytes(make_zip({**ML1M, "ratings.dat": "1::10::5::1\n1::99::5::2\n"}))
    result = CliRunner().invoke(app, ["data", "import", str(z), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "ratings.dat:2: field 'movie id' 99" in result.output
    datasets = tmp_path / "d" / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())


def test_import_replaces_an_earlier_import(tmp_path):
    import_dataset(write(tmp_path / "a", ML1M), name="x", data_dir=tmp_path / "d")
    smaller = {**ML1M, "ratings.dat": "1::10::5::1\n"}
    import_dataset(write(tmp_path / "b", smaller), name="x", data_dir=tmp_path / "d")
    assert load_dataset("x", tmp_path / "d").n_interactions == 1
    assert sorted(p.name for p in (tmp_path / "d" / "datasets").iterdir()) == ["x"]


def test_missing_name_explains_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="bstrec data download ml-25m"):
        load_dataset("ml-25m", tmp_path)
