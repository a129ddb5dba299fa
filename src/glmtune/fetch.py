"""Fetch datasets (by URL) and base models (Hugging Face, ModelScope or a local folder).

Every failure becomes a FetchError that names what was being fetched, from where, and what to
do instead, because the usual cause is an offline machine and the fix is a local copy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from glmtune.data_settings import FetchSettings

log = logging.getLogger(__name__)

_DEFAULT_ENDPOINTS = {"huggingface": "https://huggingface.co", "modelscope": "https://www.modelscope.cn"}
_ENDPOINT_ENV = {"huggingface": "HF_ENDPOINT", "modelscope": "MODELSCOPE_DOMAIN"}
FALLBACK_NAME = "download"  # a downloaded file's name when its URL gives no usable one


class FetchError(RuntimeError):
    """A dataset or model could not be fetched; the message says what to do instead."""


def _check_member(name: str, archive: Path) -> None:
    # Archives come from the internet: never let a member write outside the target folder.
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise FetchError(f"archive {archive.name} has an unsafe member path {name!r}; refusing to extract it")


def _archive_kind(path: Path) -> str | None:
    """By content, not name: the official AdvertiseGen link (`.../?dl=1`) carries no suffix."""
    if zipfile.is_zipfile(path):
        return "zip"
    return "tar" if tarfile.is_tarfile(path) else None


def _extract(archive: Path, kind: str, dest: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for n in zf.namelist():
                _check_member(n, archive)
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        for m in tf.getmembers():
            _check_member(m.name, archive)
        # The 'data' filter (3.10.12+/3.11.4+) also rejects links pointing outside dest.
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - old Pythons
            tf.extractall(dest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _install(tmp: Path, out_dir: Path) -> None:
    # Rename is the last step, so a failure earlier leaves no partial out_dir.
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
    elif out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def fetch_url_dataset(name: str, url: str, out_dir: str | Path, sha256: str | None,
                      timeout: float = 15.0) -> Path:
    """Download url into out_dir, extracting tar (any compression) and zip archives; a plain file keeps the URL's
    file name (url_file_name). The files are read-only, and out_dir appears only when complete."""
    out_dir = Path(out_dir)
    with _staged_dataset(out_dir) as staged:
        download = staged.parent / "download"
        try:
            # The timeout bounds connect and each read, so an offline machine fails in seconds.
            with urllib.request.urlopen(url, timeout=timeout) as resp, download.open("wb") as f:
                shutil.copyfileobj(resp, f)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FetchError(
                f"dataset {name!r}: could not download {url} ({reason}). This machine may be offline: "
                f"download it elsewhere and point datasets.{name}.source: path / files: at the local copy."
            ) from exc
        if sha256 is not None:
            actual = _sha256(download)
            if actual.lower() != sha256.strip().lower():
                raise FetchError(
                    f"dataset {name!r}: {url} has sha256 {actual}, expected {sha256}. The file changed or "
                    f"is corrupt: check the URL, update datasets.{name}.sha256, or use source: path with a local copy."
                )
        kind = _archive_kind(download)
        if kind:
            try:
                _extract(download, kind, staged)
            except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # EOFError: cut short
                raise FetchError(f"dataset {name!r}: could not extract {url} ({exc}); "
                                 f"use source: path with a local copy instead.") from exc
            except FetchError as exc:
                raise FetchError(f"dataset {name!r} from {url}: {exc}") from exc
        else:
            os.replace(download, staged / url_file_name(url))
    return out_dir


def _endpoint(source: str) -> tuple[str, int]:
    raw = os.environ.get(_ENDPOINT_ENV[source]) or _DEFAULT_ENDPOINTS[source]
    parsed = urllib.parse.urlparse(raw if "://" in raw else f"https://{raw}")
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    return parsed.hostname or raw, port


def _reachable(host: str, port: int, timeout: float = 2.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_model(name: str, source: str, repo_id: str | None, out_dir: str | Path, revision: str | None,
                local_files_only: bool = False, cache_dir: str | Path | None = None) -> Path:
    """Download model repo_id from Hugging Face or ModelScope into out_dir."""
    out_dir = Path(out_dir)
    if source not in _ENDPOINT_ENV:
        raise FetchError(f"model {name!r}: unknown source {source!r}; use huggingface, modelscope or path.")
    if not repo_id:
        raise FetchError(f"model {name!r}: source {source} needs a repo id (or use source: path with a local folder).")
    advice = (f"Download it elsewhere (or on a machine with access) and set source: path with the local folder "
              f"for model {name!r}.")
    if source == "modelscope":
        try:
            from modelscope import snapshot_download  # optional extra
        except ImportError as exc:
            raise FetchError(f"model {name!r}: source modelscope needs the modelscope package: "
                             f'run `pip install -e ".[modelscope]"`, or use source: huggingface / path.') from exc
    else:
        from huggingface_hub import snapshot_download
    if source == "huggingface" and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        local_files_only = True
    if not local_files_only:
        # modelscope retries for ~20 s before giving up; a short connect tells us much sooner.
        host, port = _endpoint(source)
        if not _reachable(host, port):
            raise FetchError(f"model {name!r}: cannot reach {source} ({host}:{port}) to download {repo_id}; "
                             f"this machine may be offline. {advice}")
    try:
        snapshot_download(repo_id, revision=revision, local_dir=str(out_dir),
                          cache_dir=None if cache_dir is None else str(cache_dir),
                          local_files_only=local_files_only)
    except Exception as exc:  # CacheNotFound, LocalEntryNotFoundError, OSError, HTTP errors...
        where = "in the local cache" if local_files_only else f"from {source}"
        raise FetchError(f"model {name!r}: could not get {repo_id} {where} "
                         f"({type(exc).__name__}: {exc}). {advice}") from exc
    if not (out_dir / "config.json").is_file():
        raise FetchError(f"model {name!r}: {repo_id} from {source} has no config.json in {out_dir}; "
                         f"is it a transformers model? {advice}")
    return out_dir


def link_local_model(name: str, path: str | Path, out_dir: str | Path, own_files: Mapping[str, str] | None = None) -> Path:
    """Make out_dir a folder of symlinks to the local model folder's entries (no copy of the weights); `own_files`
    (name -> text) are written there instead of linked (glmtune.model.folder_template).

    A folder of its own, not one link to the whole folder: Snakemake dates a linked folder by the folder's own time,
    which changes whenever any file is added there (a README, a notebook's checkpoint) and re-ran tokenization and
    training; this folder is dated when prepare_model made it, and prepare_model's inputs are the files that decide
    what the model computes (glmtune.model.base_identity.identifying_files). Hidden entries are left out.
    """
    from glmtune.io import atomic_path

    target = Path(path).expanduser().resolve()
    out_dir = Path(out_dir)
    if not target.is_dir():
        raise FetchError(f"model {name!r}: local path {target} does not exist or is not a folder; "
                         f"fix model.path or use source: huggingface / modelscope.")
    if not (target / "config.json").is_file():
        raise FetchError(f"model {name!r}: local path {target} has no config.json; "
                         f"point model.path at the folder holding the model's config.json.")
    if out_dir.is_symlink():
        out_dir.unlink()  # one link to the whole folder, as glmtune made it before
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for entry in sorted(target.iterdir()):
            if not entry.name.startswith(".") and entry.name not in (own_files or {}):
                os.symlink(entry, tmp / entry.name, target_is_directory=entry.is_dir())
        for file_name, text in (own_files or {}).items():
            (tmp / file_name).write_text(text, encoding="utf-8")
    return out_dir


def linked_model_source(folder: str | Path) -> Path | None:
    """The model folder that `folder` links file by file (link_local_model), or None for a folder of its own (converted,
    or kept for remote code with our tokenizer): what an adapter should name as its base, so that it loads without
    this checkout's resources/."""
    config = Path(folder, "config.json")
    return Path(os.readlink(config)).parent if config.is_symlink() else None


def url_file_name(url: str) -> str:
    """The file name of a URL's last path segment, percent-decoded and cut to a plain base name: decoding can make
    separators and `..` (`..%2F..%2Fx.json`), and a name from the internet must not reach outside the dataset folder.
    Leading dots go too (no hidden files); nothing left gives FALLBACK_NAME."""
    decoded = urllib.parse.unquote(urllib.parse.urlparse(url).path).replace("\\", "/")
    name = decoded.rsplit("/", 1)[-1].replace("\0", "").strip().lstrip(".")
    return name or FALLBACK_NAME


def _make_read_only(folder: Path) -> None:
    """The files of a dataset folder read-only: the folder is one directory output, so Snakemake never sees an edit
    inside it (README: copy the file and use source: path)."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(path.stat().st_mode & ~0o222)


@contextmanager
def _staged_dataset(out_dir: Path) -> Iterator[Path]:
    """A folder to fill beside out_dir; on success its files are made read-only and it becomes out_dir, on failure
    it goes, so no partial dataset is ever left."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staged = tmp / "out"
        staged.mkdir()
        yield staged
        _make_read_only(staged)
        _install(staged, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetched_file_problem(source: str, file: str) -> str | None:
    """What is wrong with a `files` entry of a fetched dataset, known from the config alone (None: nothing): a url
    dataset's file is a relative name inside its download, never outside it (which no job would depend on); a demo
    dataset's is one the generator writes."""
    if source == "url":
        p = PurePosixPath(file.replace("\\", "/"))
        if not file.strip() or p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")) \
                or p == PurePosixPath("."):
            return (f"not a file inside the download: {file!r}; name one relative to resources/datasets/<name>/, "
                    "without '..' (e.g. AdvertiseGen/train.json); for a local file use source: path")
    if source == "demo":
        from glmtune.data.synthetic import FILE_NAMES

        if file not in FILE_NAMES.values():
            return f"no such demo file {file!r}: the demo source writes {', '.join(FILE_NAMES.values())}"
    return None


def fetched_member(folder: str | Path, member: str, dataset: str, split: str) -> Path:
    """A file of a fetched dataset (its `files` entry `split`); one the download does not hold stops, listing what it
    holds, since only the download tells."""
    path = Path(folder, member)
    if path.is_file():
        return path
    held = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                  if p.is_file() and p.name != ".snakemake_timestamp")  # Snakemake's mark of a directory output
    shown = ", ".join(held[:20]) + (f" and {len(held) - 20} more" if len(held) > 20 else "")
    raise FetchError(f"datasets.{dataset}.files.{split}: {folder} holds no file {member!r}; it holds "
                     f"{len(held)}: {shown or 'nothing'}")


def fetched_members(folder: str | Path, members: str | list[str], dataset: str, split: str) -> list[Path]:
    """The files of a fetched dataset's `files` entry `split` (one, or a list read as one), each there (fetched_member)
    and none a shard of several whose other shards the entry leaves out: known only once the download is there."""
    from glmtune.data.records import shards_problem
    from glmtune.data_settings import given_files

    paths = [fetched_member(folder, member, dataset, split) for member in given_files(members)]
    for path in paths:
        if problem := shards_problem(path, map(str, paths)):
            raise FetchError(f"datasets.{dataset}.files.{split}: {path} is one shard of several, and {problem}: name "
                             "every shard (a list of files is read as one)")
    return paths


def fetch_dataset(name: str, spec: FetchSettings, out_dir: str | Path) -> Path:
    """The fetch_dataset stage: generate the demo data or download `spec.url` into out_dir (files read-only)."""
    if spec.source == "demo":
        from glmtune.data.synthetic import write_advertisegen

        demo = spec.demo
        with _staged_dataset(Path(out_dir)) as staged:
            write_advertisegen(staged, demo.train_rows, demo.dev_rows, demo.seed)
        return Path(out_dir)
    if spec.source == "url":
        if not spec.url:
            raise FetchError(f"datasets.{name}.url is required with source: url")
        return fetch_url_dataset(name, spec.url, out_dir, spec.sha256)
    raise FetchError(f"dataset {name!r}: source {spec.source!r} is read in place and needs no fetching")


def download_model(name: str, spec: dict[str, Any], cache_dir: str | Path, record: str | Path) -> Path:
    """The fetch_model stage (the login node on a cluster): a hub model into cache_dir/downloads/<name>.

    That folder is not a Snakemake output, so a download that fails or is killed resumes instead of starting over;
    `record` (the output) names it, with the repo and revision, for prepare_model.
    """
    from glmtune.io import write_json

    folder = Path(cache_dir) / "downloads" / name
    wanted = {"source": spec["source"], "repo_id": spec["repo_id"], "revision": spec["revision"]}
    marker = folder.with_name(f"{name}.repo.json")  # beside the folder: prepare_model links every file in it
    if folder.exists() and marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) != wanted:
        # snapshot_download into a folder of another repo keeps that repo's files the new one lacks (a stale
        # model.safetensors beside new shards), and offline it returns the folder as it is: start it over.
        old = json.loads(marker.read_text(encoding="utf-8"))
        log.warning("model %r: %s holds %s %s (revision %s), not %s %s (revision %s): emptied to download anew",
                    name, folder, old.get("source"), old.get("repo_id"), old.get("revision"), *wanted.values())
        shutil.rmtree(folder)
    write_json(marker, wanted)  # before the download: one killed midway resumes as the same repo's
    fetch_model(name, spec["source"], spec["repo_id"], folder, spec["revision"], cache_dir=cache_dir)
    write_json(record, {"path": str(folder.resolve()), **wanted})
    return folder


def downloaded_folder(record: str | Path) -> Path:
    """The folder a fetch_model record names."""
    return Path(json.loads(Path(record).read_text(encoding="utf-8"))["path"])
