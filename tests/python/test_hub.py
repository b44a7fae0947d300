"""Models and calibration data from the HuggingFace Hub, against a Hub written here.

A local server (http.server, threads) on 127.0.0.1 plays the Hub: the revision API, the tree API
huggingface_hub lists with, resolve/ with the HEAD metadata handshake (X-Repo-Commit, ETag /
X-Linked-Etag, X-Linked-Size), X-Error-Code errors, and the dataset viewer's /rows. LFS files
redirect to a second server addressed as "localhost" (another host, like the Hub's CDN), so the
tests can see which requests carried the token. Every request is logged.

The reference is huggingface_hub itself (pip): a cache it writes is used by qwodel offline, and
it finds offline what qwodel downloaded. Nothing here reaches beyond the loopback interface:
HF_ENDPOINT and HF_DATASETS_SERVER always point at the local server and proxies are disabled.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from conftest import BUILD, REPO, run_qwodel, tool
import hf_fixtures

GRANTED = "hf_granted_0123456789"   # may read the gated repo
NO_GRANT = "hf_nogrant_0123456789"  # valid, but has not accepted the gated repo's conditions
VALID_TOKENS = {GRANTED, NO_GRANT}
LFS_SUFFIX = ".safetensors"
MODEL_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "tokenizer.model", "special_tokens_map.json", "model.safetensors.index.json"]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The state both servers serve from, and the log of what they were asked."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.rows: dict[tuple, list] = {}
        self.blobs: dict[str, bytes] = {}
        self.log: list[dict] = []
        self.cuts: dict[str, int] = {}   # sha256 -> transfers still to cut short
        self.cut_bytes = 4096
        self.corrupt: set[str] = set()   # sha256 served with one byte changed
        self.renamed: dict[str, str] = {}  # old repo ID -> new one
        self.unavailable: dict[str, int] = {}  # path -> how many more times to answer 503
        self.lock = threading.Lock()
        self.hub_url = self.cdn_url = ""

    def add_repo(self, repo_id, files: dict[str, bytes], *, branches=None, gated=False,
                 listed_only=()):
        """files: name -> bytes at "main"; branches: name -> {file: bytes} (another commit);
        listed_only: names the listing shows but resolve/ does not have."""
        commits, refs = {}, {}
        for ref, content in {"main": files, **(branches or {})}.items():
            sha = hashlib.sha1((repo_id + ref + json.dumps(sorted(content))).encode()).hexdigest()
            commits[sha] = dict(content)
            refs[ref] = sha
            for data in content.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        self.repos[repo_id] = dict(commits=commits, refs=refs, gated=gated,
                                   listed_only=set(listed_only))
        return refs

    def requests(self, server=None, path_part=""):
        with self.lock:
            return [r for r in self.log
                    if (server is None or r["server"] == server) and path_part in r["path"]]


def make_handler(hub: FakeHub, server_name: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self.route(head=True)

        def do_GET(self):
            self.route(head=False)

        # ---- helpers ----
        def send(self, code, body=b"", headers=None, head=False, length=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def send_json(self, code, obj, headers=None, head=False):
            self.send(code, json.dumps(obj).encode(),
                      {"Content-Type": "application/json", **(headers or {})}, head)

        def error(self, code, error_code=None, message="error", head=False, extra=None):
            headers = dict(extra or {})
            if error_code:
                headers["X-Error-Code"] = error_code
            headers["X-Error-Message"] = message
            self.send_json(code, {"error": message}, headers, head)

        def token(self):
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

        # ---- routes ----
        def route(self, head):
            url = urlsplit(self.path)
            with hub.lock:
                hub.log.append(dict(server=server_name, method=self.command, path=url.path,
                                    query=url.query, auth=self.headers.get("Authorization"),
                                    range=self.headers.get("Range")))
            with hub.lock:
                busy = hub.unavailable.get(url.path, 0)
                if busy:
                    hub.unavailable[url.path] = busy - 1
            if busy:
                return self.error(503, None, "Service Unavailable", head)
            if server_name == "cdn":
                return self.cdn(url.path, head)
            token = self.token()
            if token is not None and token not in VALID_TOKENS:
                return self.error(401, None, "Invalid credentials in Authorization header", head)
            for old, new in hub.renamed.items():  # a renamed repository: same-host redirect
                if f"/{old}/" in url.path:
                    location = self.path.replace(f"/{old}/", f"/{new}/", 1)
                    return self.send(307, b"", {"Location": location}, head)
            parts = url.path.strip("/").split("/")
            if url.path == "/rows":
                return self.rows(parse_qs(url.query), head)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self.api(parts[2] + "/" + parts[3], parts[4:], head)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self.resolve(parts[0] + "/" + parts[1], unquote(parts[3]),
                                    unquote("/".join(parts[4:])), head, token)
            return self.error(404, None, "no such route", head)

        def find(self, repo_id, rev, head):
            repo = hub.repos.get(repo_id)
            if repo is None:
                self.error(401, "RepoNotFound", "Repository not found", head)
                return None, None
            sha = repo["refs"].get(rev, rev if rev in repo["commits"] else None)
            if sha is None:
                self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
                return repo, None
            return repo, sha

        def api(self, repo_id, rest, head):
            if rest[:1] == ["tree"]:  # huggingface_hub's listing
                repo, sha = self.find(repo_id, unquote(rest[1]), head)
                if sha is None:
                    return
                entries = []
                for name, data in sorted(repo["commits"][sha].items()):
                    entry = dict(type="file", path=name, size=len(data), oid=git_blob_sha1(data))
                    if name.endswith(LFS_SUFFIX):
                        entry["lfs"] = dict(oid=hashlib.sha256(data).hexdigest(),
                                            size=len(data), pointerSize=130)
                    entries.append(entry)
                return self.send_json(200, entries, head=head)
            rev = unquote(rest[1]) if rest[:1] == ["revision"] else "main"
            repo, sha = self.find(repo_id, rev, head)
            if sha is None:
                return
            names = sorted(set(repo["commits"][sha]) | repo["listed_only"])
            return self.send_json(200, dict(id=repo_id, modelId=repo_id, sha=sha, private=False,
                                            gated="manual" if repo["gated"] else False,
                                            siblings=[dict(rfilename=n) for n in names]),
                                  head=head)

        def resolve(self, repo_id, rev, name, head, token):
            repo, sha = self.find(repo_id, rev, head)
            if sha is None:
                return
            if repo["gated"] and token != GRANTED:
                return self.error(401 if token is None else 403, "GatedRepo",
                                  f"Access to model {repo_id} is restricted.", head)
            data = repo["commits"][sha].get(name)
            commit = {"X-Repo-Commit": sha}
            if data is None:
                return self.error(404, "EntryNotFound", f"{name} does not exist", head, commit)
            if name.endswith(LFS_SUFFIX):
                digest = hashlib.sha256(data).hexdigest()
                return self.send(302, b"", {**commit, "X-Linked-Etag": f'"{digest}"',
                                            "X-Linked-Size": len(data),
                                            "ETag": f'"{git_blob_sha1(data)}"',
                                            "Location": f"{hub.cdn_url}/cdn/{digest}?sig=x"},
                                 head)
            return self.send(200, data, {**commit, "ETag": f'"{git_blob_sha1(data)}"'}, head)

        def cdn(self, path, head):
            digest = path.rsplit("/", 1)[-1]
            data = hub.blobs.get(digest)
            if data is None:
                return self.send(404, b"no such object", head=head)
            if digest in hub.corrupt:
                data = bytes([data[0] ^ 1]) + data[1:]
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            code = 206 if start else 200
            headers = ({"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                       if start else {})
            body = data[start:]
            with hub.lock:
                cut = hub.cuts.get(digest, 0)
                if cut and not head:
                    hub.cuts[digest] = cut - 1
            if cut and not head:  # announce everything, send a little, hang up
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:hub.cut_bytes])
                self.wfile.flush()
                self.close_connection = True
                return
            self.send(code, body, headers, head)

        def rows(self, q, head):
            key = (q.get("dataset", [""])[0], q.get("config", [""])[0], q.get("split", [""])[0])
            rows = hub.rows.get(key)
            if rows is None:
                return self.send_json(404, {"error": "The dataset does not exist."}, head=head)
            offset, length = int(q["offset"][0]), int(q["length"][0])
            assert length <= 100
            page = [dict(row_idx=i, row=rows[i], truncated_cells=[])
                    for i in range(offset, min(offset + length, len(rows)))]
            return self.send_json(200, dict(features=[], rows=page, num_rows_total=len(rows),
                                            num_rows_per_page=100, partial=False), head=head)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that hangs up mid-transfer (a cancelled download) is expected here
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


class Servers:
    def __init__(self, hub: FakeHub):
        self.hub = hub
        self.hub_server = QuietServer(("127.0.0.1", 0), make_handler(hub, "hub"))
        self.cdn_server = QuietServer(("127.0.0.1", 0), make_handler(hub, "cdn"))
        hub.hub_url = f"http://127.0.0.1:{self.hub_server.server_port}"
        hub.cdn_url = f"http://localhost:{self.cdn_server.server_port}"  # another host
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.hub_server, self.cdn_server)]
        for t in self.threads:
            t.start()
        self.running = True

    def stop(self):
        if self.running:
            for s in (self.hub_server, self.cdn_server):
                s.shutdown()
                s.server_close()
            self.running = False


def model_files(model_dir: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Llama with sharded safetensors, and a second revision of it."""
    root = tmp_path_factory.mktemp("hub-models")
    main = hf_fixtures.make_checkpoint(root / "tiny-llama", "llama", tokenizer="llama2", tied=False,
                                       shards=2, dtype="f16", hidden=128, layers=1, heads=4,
                                       intermediate=256)
    v1 = hf_fixtures.make_checkpoint(root / "v1", "llama", tokenizer="llama2", tied=False,
                                     shards=1, dtype="f16", hidden=128, layers=1, heads=4,
                                     intermediate=256, seed=7)
    return model_files(main), model_files(v1), main


@pytest.fixture
def hub(checkpoint):
    main, v1, _ = checkpoint
    h = FakeHub()
    h.add_repo("org/tiny-llama", {**main, "pytorch_model.bin": b"pickle", "README.md": b"#",
                                  "modeling_tiny.py": b"import os; os.system('touch pwned')"},
               branches={"v1": v1})
    h.add_repo("org/gated-llama", main, gated=True)
    h.add_repo("org/missing-file", main, listed_only=["tokenizer_config.json.extra.safetensors"])
    h.add_repo("org/cut-llama", {**main})
    h.add_repo("org/bin-only", {"config.json": main["config.json"], "pytorch_model.bin": b"x"})
    servers = Servers(h)
    h.servers = servers
    yield h
    servers.stop()


def hub_env(hub: FakeHub, home: pathlib.Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_")) and
           k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_ENDPOINT=hub.hub_url, HF_DATASETS_SERVER=hub.hub_url, HF_HOME=str(home),
               NO_PROXY="*", no_proxy="*", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def quantize(qwodel_bin, model_id, out, env, *args, check=True):
    return run_qwodel(qwodel_bin, "quantize", model_id, "-o", out, "-f", "Q8_0", *args,
                      check=check, env=env)


def repo_folder(home, repo_id):
    return pathlib.Path(home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def cache_files(home: pathlib.Path):
    return [p for p in pathlib.Path(home).rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.fixture(scope="module")
def reference_gguf(checkpoint, tmp_path_factory):
    """The same model quantized from its local directory: the Hub path must give these bytes."""
    _, _, main_dir = checkpoint
    out = tmp_path_factory.mktemp("ref-out")
    run_qwodel(tool("qwodel"), "quantize", main_dir, "-o", out, "-f", "Q8_0")
    (path,) = out.glob("*.gguf")
    return path.read_bytes()


# ---- models ------------------------------------------------------------------------------------


def test_quantize_by_id_then_offline(qwodel_bin, hub, checkpoint, reference_gguf, tmp_path):
    main, _, _ = checkpoint
    home = tmp_path / "hf"
    env = hub_env(hub, home)
    proc = quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out", env, "--token", GRANTED)
    out = tmp_path / "out" / "tiny-llama-q8_0.gguf"  # named after the ID's last part
    assert out.read_bytes() == reference_gguf
    assert GRANTED not in proc.stdout + proc.stderr
    # without a terminal the byte progress prints a line per 10%, ending at 100%
    downloads = [ln for ln in proc.stderr.splitlines() if " downloading " in ln]
    assert downloads and "MiB" in downloads[0] and downloads[-1].startswith("100%")

    # Cache layout as huggingface_hub writes it.
    folder = repo_folder(home, "org/tiny-llama")
    sha = hub.repos["org/tiny-llama"]["refs"]["main"]
    assert (folder / "refs" / "main").read_text() == sha
    snap = folder / "snapshots" / sha
    assert sorted(p.name for p in snap.iterdir()) == sorted(
        n for n in main if n in MODEL_FILES or n.endswith(LFS_SUFFIX))
    for name, data in main.items():
        link = snap / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        etag = (hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIX)
                else git_blob_sha1(data))
        assert os.readlink(link) == f"../../blobs/{etag}"
        assert link.read_bytes() == data
    assert not any(p.name.endswith(".incomplete") for p in folder.rglob("*"))
    # never the pickled weights, nor the repository's code (trust_remote_code has no counterpart)
    assert not hub.requests(path_part="pytorch_model.bin")
    assert not hub.requests(path_part="modeling_tiny.py")

    # The token went to the Hub and never to the other host; it is in no file written.
    hub_reqs = hub.requests("hub")
    cdn_reqs = hub.requests("cdn")
    assert hub_reqs and cdn_reqs
    assert all(r["auth"] == f"Bearer {GRANTED}" for r in hub_reqs)
    assert all(r["auth"] is None for r in cdn_reqs)
    assert {r["path"].rsplit("/", 1)[-1] for r in cdn_reqs} == {
        hashlib.sha256(d).hexdigest() for n, d in main.items() if n.endswith(LFS_SUFFIX)}
    for f in cache_files(home) + [out]:
        assert GRANTED.encode() not in f.read_bytes(), f

    # A second run needs only the listing; with the Hub gone, offline, it needs nothing.
    n_before = len(hub.log)
    quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out2", env)
    assert [r["path"] for r in hub.log[n_before:]] == [
        "/api/models/org/tiny-llama/revision/main"]
    hub.servers.stop()
    quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out3", {**env, "HF_HUB_OFFLINE": "1"})
    assert (tmp_path / "out3" / "tiny-llama-q8_0.gguf").read_bytes() == reference_gguf
    # Unreachable Hub, not offline: the cached snapshot, with a warning.
    proc = quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out4", env)
    assert "cached snapshot" in proc.stderr
    # Not in the cache at all.
    proc = quantize(qwodel_bin, "org/other", tmp_path / "out5", {**env, "HF_HUB_OFFLINE": "1"},
                    check=False)
    assert proc.returncode == 1 and "HF_HUB_OFFLINE" in proc.stderr
    proc = quantize(qwodel_bin, "org/other", tmp_path / "out5", env, check=False)
    assert proc.returncode == 1 and "cannot reach the Hub" in proc.stderr


HF_SNAPSHOT = """
import sys
from huggingface_hub import snapshot_download, hf_hub_download
path = snapshot_download(sys.argv[1], allow_patterns=sys.argv[2].split(","))
print(path)
print(hf_hub_download(sys.argv[1], "config.json"))
"""


def run_hf(env, repo_id, patterns):
    proc = subprocess.run([sys.executable, "-c", HF_SNAPSHOT, repo_id, ",".join(patterns)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_cache_shared_with_huggingface_hub(qwodel_bin, hub, checkpoint, reference_gguf, tmp_path):
    main, _, _ = checkpoint
    patterns = ["*.json", "*.safetensors", "tokenizer.model"]
    # huggingface_hub downloads; qwodel uses its cache without network.
    home = tmp_path / "hf-by-python"
    env = hub_env(hub, home)
    snap, config = run_hf(env, "org/tiny-llama", patterns)
    n = len(hub.log)
    quantize(qwodel_bin, "org/tiny-llama", tmp_path / "a", {**env, "HF_HUB_OFFLINE": "1"})
    assert len(hub.log) == n
    assert (tmp_path / "a" / "tiny-llama-q8_0.gguf").read_bytes() == reference_gguf

    # qwodel downloads; huggingface_hub finds it offline, at the same paths.
    home2 = tmp_path / "hf-by-qwodel"
    env2 = hub_env(hub, home2)
    quantize(qwodel_bin, "org/tiny-llama", tmp_path / "b", env2, "--dry-run")
    n = len(hub.log)
    snap2, config2 = run_hf({**env2, "HF_HUB_OFFLINE": "1"}, "org/tiny-llama", patterns)
    assert len(hub.log) == n
    assert snap2.replace(str(home2), "") == snap.replace(str(home), "")
    assert config2.replace(str(home2), "") == config.replace(str(home), "")
    # the two caches hold the same blobs under the same names
    blobs = lambda h: sorted(p.name for p in (repo_folder(h, "org/tiny-llama") / "blobs").iterdir())
    assert blobs(home) == blobs(home2)


def test_revision(qwodel_bin, hub, checkpoint, tmp_path):
    _, v1, _ = checkpoint
    home = tmp_path / "hf"
    env = hub_env(hub, home)
    quantize(qwodel_bin, "org/tiny-llama@v1", tmp_path / "out", env, "--dry-run")
    sha = hub.repos["org/tiny-llama"]["refs"]["v1"]
    folder = repo_folder(home, "org/tiny-llama")
    assert (folder / "refs" / "v1").read_text() == sha
    snapshot = folder / "snapshots" / sha
    assert (snapshot / "model.safetensors").read_bytes() == v1["model.safetensors"]
    assert hub.requests("hub", "/api/models/org/tiny-llama/revision/v1")
    # a commit hash works as a revision, and offline through refs/ for a branch name
    quantize(qwodel_bin, f"org/tiny-llama@{sha}", tmp_path / "out", env, "--dry-run")
    quantize(qwodel_bin, "org/tiny-llama@v1", tmp_path / "out", {**env, "HF_HUB_OFFLINE": "1"},
             "--dry-run")
    proc = quantize(qwodel_bin, "org/tiny-llama@nope", tmp_path / "out", env, check=False)
    assert proc.returncode == 1 and "revision not found" in proc.stderr


def test_errors_say_what_to_do(qwodel_bin, hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    cases = [
        ("org/gated-llama", [], "gated"),
        ("org/gated-llama", ["--token", NO_GRANT], "gated"),
        ("org/tiny-llama", ["--token", "hf_bogus_token_value"], "token was rejected"),
        ("org/nothing-here", [], "repository not found"),
        ("org/missing-file", [], "file not found"),
        ("org/bin-only", [], "safetensors"),
    ]
    for model_id, args, says in cases:
        proc = quantize(qwodel_bin, model_id, tmp_path / "out", env, "--dry-run", *args,
                        check=False)
        assert proc.returncode == 1, (model_id, proc.stderr)
        assert says in proc.stderr, (model_id, proc.stderr)
        assert model_id in proc.stderr
        for a in args:
            assert a == "--token" or a not in proc.stderr  # the token is never echoed
    # with access, the gated repository downloads; HF_TOKEN is read when no option is given
    quantize(qwodel_bin, "org/gated-llama", tmp_path / "out", {**env, "HF_TOKEN": GRANTED},
             "--dry-run")
    # and so is $HF_HOME/token
    home = tmp_path / "hf-token-file"
    home.mkdir()
    (home / "token").write_text(GRANTED + "\n")
    quantize(qwodel_bin, "org/gated-llama", tmp_path / "out", hub_env(hub, home), "--dry-run")
    assert hub.requests("hub", "/org/gated-llama/resolve/")[-1]["auth"] == f"Bearer {GRANTED}"


def test_resume_cut_transfer(qwodel_bin, hub, checkpoint, tmp_path):
    main, _, _ = checkpoint
    name = "model-00001-of-00002.safetensors"
    digest = hashlib.sha256(main[name]).hexdigest()
    assert len(main[name]) > 4 * hub.cut_bytes
    hub.cuts[digest] = 3  # every attempt of the first run is cut short
    home = tmp_path / "hf"
    env = hub_env(hub, home)
    proc = quantize(qwodel_bin, "org/cut-llama", tmp_path / "out", env, "--dry-run", check=False)
    assert proc.returncode == 1 and "next run resumes" in proc.stderr, proc.stderr
    part = repo_folder(home, "org/cut-llama") / "blobs" / f"{digest}.incomplete"
    assert part.stat().st_size == 3 * hub.cut_bytes
    ranges = [r["range"] for r in hub.requests("cdn", digest)]
    assert ranges == [None, f"bytes={hub.cut_bytes}-", f"bytes={2 * hub.cut_bytes}-"]
    quantize(qwodel_bin, "org/cut-llama", tmp_path / "out", env, "--dry-run")
    assert [r["range"] for r in hub.requests("cdn", digest)][3:] == [f"bytes={3 * hub.cut_bytes}-"]
    assert not part.exists()
    assert (repo_folder(home, "org/cut-llama") / "blobs" / digest).read_bytes() == main[name]


def test_corrupt_download_is_refused(qwodel_bin, hub, checkpoint, tmp_path):
    main, _, _ = checkpoint
    digest = hashlib.sha256(main["model-00002-of-00002.safetensors"]).hexdigest()
    hub.corrupt.add(digest)
    home = tmp_path / "hf"
    proc = quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out", hub_env(hub, home),
                    "--dry-run", check=False)
    assert proc.returncode == 1 and "sha256" in proc.stderr and digest in proc.stderr
    blobs = repo_folder(home, "org/tiny-llama") / "blobs"
    assert not (blobs / digest).exists() and not (blobs / f"{digest}.incomplete").exists()


def test_python_api_passes_token(hub, checkpoint, tmp_path):
    """The package's Quantizer(token=...) reaches the download (through the C library)."""
    lib = BUILD / "libqwodel.so"
    if not lib.exists():
        pytest.skip(f"{lib} is not built")
    env = hub_env(hub, tmp_path / "hf", QWODEL_LIB=lib, PYTHONPATH=REPO / "python",
                  ASAN_OPTIONS="detect_leaks=0")
    cache = BUILD / "CMakeCache.txt"
    if cache.exists() and "QW_SANITIZE:BOOL=ON" in cache.read_text():  # as the Makefile does
        env["LD_PRELOAD"] = ":".join(
            subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True,
                           text=True).stdout.strip() for lib in ("libasan.so", "libubsan.so"))
    code = (
        "import sys, qwodel\n"
        "try:\n"
        "    qwodel.Quantizer('gguf', 'org/gated-llama', sys.argv[1])\n"
        "except qwodel.ValidationError as e:\n"
        "    print('denied', 'gated' in str(e))\n"
        f"q = qwodel.Quantizer('gguf', 'org/gated-llama', sys.argv[1], token={GRANTED!r})\n"
        "print('ok', q.plan('Q8_0')['output'])\n"
        "seen = []\n"
        "def stop(percent, stage, message):\n"
        "    seen.append(stage)\n"
        "    if stage == 'downloading' and percent > 0:\n"
        "        raise KeyboardInterrupt\n"
        "try:\n"
        "    qwodel.Quantizer('gguf', 'org/tiny-llama', sys.argv[1], progress_callback=stop)\n"
        "except KeyboardInterrupt:\n"
        "    print('cancelled', seen[:2])\n"
        "q = qwodel.Quantizer('gguf', 'org/tiny-llama', sys.argv[1])\n"
        "print('ok', q.plan('Q8_0')['output'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "denied True" in proc.stdout
    assert "gated-llama-q8_0.gguf" in proc.stdout
    # a progress callback that raises stops the download; the next open completes it
    assert "cancelled ['loading', 'downloading']" in proc.stdout
    assert "tiny-llama-q8_0.gguf" in proc.stdout
    # the gated repository's two shards (the same bytes), then for this one: one shard fetched
    # whole, the other stopped and fetched again
    shards = {hashlib.sha256(d).hexdigest() for n, d in checkpoint[0].items()
              if n.endswith(LFS_SUFFIX)}
    assert len([r for r in hub.requests("cdn") if r["path"][5:] in shards]) == 2 + 3


# ---- calibration data ---------------------------------------------------------------------------


def test_calibration_rows(hub, tmp_path):
    calib_dump = tool("calib_dump")
    texts = [("" if i % 3 == 0 else f" = line {i} = \n") for i in range(250)]
    hub.rows[("org/textset", "raw-v1", "train")] = [dict(idx=i, text=t)
                                                    for i, t in enumerate(texts)]
    hub.rows[("org/textset", "raw-v1", "test")] = [dict(title="only string", n=1)]
    env = hub_env(hub, tmp_path / "hf")
    run = lambda *a, e=env: subprocess.run([str(calib_dump), *a], env=e, capture_output=True,
                                           text=True, timeout=120)
    proc = run("org/textset:raw-v1", "train", "150")
    assert proc.returncode == 0, proc.stderr
    want = [t for t in texts if t.strip()]
    assert json.loads(proc.stdout) == want[:150]
    offsets = [parse_qs(r["query"])["offset"][0] for r in hub.requests("hub", "/rows")]
    assert offsets == ["0", "100", "200"]
    # every row, then the cache serves them offline with the server gone
    assert json.loads(run("org/textset:raw-v1", "train", "1000").stdout) == want
    assert json.loads(run("org/textset:raw-v1", "test", "5").stdout) == ["only string"]
    rows_cache = tmp_path / "hf" / "hub" / ".qwodel-rows" / "datasets--org--textset" / "raw-v1"
    assert (rows_cache / "train" / "0.json").is_file()
    hub.servers.stop()
    proc = run("org/textset:raw-v1", "train", "1000", e={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and json.loads(proc.stdout) == want


def test_calibration_errors_and_local_files(hub, tmp_path):
    calib_dump = tool("calib_dump")
    env = hub_env(hub, tmp_path / "hf")
    proc = subprocess.run([str(calib_dump), "org/no-such-set:x", "train"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "org/no-such-set" in proc.stderr and "404" in proc.stderr
    lines = ["alpha beta", "", "  ", "gamma\r", "δέλτα"]
    txt = tmp_path / "c.txt"
    txt.write_bytes("\n".join(lines).encode())
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(dict(id=i, text=t)) for i, t in enumerate(lines)))
    for path in (txt, jsonl):
        proc = subprocess.run([str(calib_dump), str(path)], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        assert got == [s.rstrip("\r") if path == txt else s for s in lines if s.strip()]


def test_renamed_repo_keeps_token_on_the_hub_only(qwodel_bin, hub, checkpoint, tmp_path):
    """Same-host redirects (a renamed repository) keep the token; the CDN host never gets it."""
    main, _, _ = checkpoint
    hub.renamed["old-org/tiny-llama"] = "org/tiny-llama"
    home = tmp_path / "hf"
    quantize(qwodel_bin, "old-org/tiny-llama", tmp_path / "out", hub_env(hub, home),
             "--dry-run", "--token", GRANTED)
    old = [r for r in hub.requests("hub") if "/old-org/" in r["path"]]
    new = [r for r in hub.requests("hub") if "/org/tiny-llama/" in r["path"]]
    assert old and new and len(new) == len(old)
    assert all(r["auth"] == f"Bearer {GRANTED}" for r in old + new)
    assert hub.requests("cdn") and all(r["auth"] is None for r in hub.requests("cdn"))
    snap = repo_folder(home, "old-org/tiny-llama") / "snapshots"
    (commit,) = list(snap.iterdir())
    assert (commit / "model-00001-of-00002.safetensors").read_bytes() == \
        main["model-00001-of-00002.safetensors"]


def test_server_errors_are_retried(qwodel_bin, hub, checkpoint, tmp_path):
    main, _, _ = checkpoint
    api = "/api/models/org/tiny-llama/revision/main"
    cdn = "/cdn/" + hashlib.sha256(main["model-00002-of-00002.safetensors"]).hexdigest()
    hub.unavailable.update({api: 2, cdn: 1})
    env = hub_env(hub, tmp_path / "hf")
    quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out", env, "--dry-run")
    assert len(hub.requests("hub", api)) == 3 and len(hub.requests("cdn", cdn)) == 2
    # More than the retries: the cached snapshot (as huggingface_hub does), else the error.
    hub.unavailable[api] = 3
    proc = quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out", env, "--dry-run")
    assert "cached snapshot" in proc.stderr
    hub.unavailable[api] = 3
    proc = quantize(qwodel_bin, "org/tiny-llama", tmp_path / "out",
                    hub_env(hub, tmp_path / "hf2"), "--dry-run", check=False)
    assert proc.returncode == 1 and "server error" in proc.stderr and "503" in proc.stderr
