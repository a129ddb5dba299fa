"""Tests for glmtune.fetch; all offline (file:// URLs and an unreachable loopback port)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from glmtune import fetch
from glmtune.fetch import (FALLBACK_NAME, FetchError, fetch_model, fetch_url_dataset, fetched_file_problem, fetched_member,
                           link_local_model, linked_model_source, url_file_name, fetched_members)
from helpers.settings import fetch_settings

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, so connects are refused at once


def spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple[tuple, dict]]:
    """The calls of owner.<name> (arguments, keyword arguments), which still runs as it is."""
    real, calls = getattr(owner, name), []

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return _tar_gz(tmp_path / "ds.tar.gz", {"AdvertiseGen/train.json": b'{"content": "a", "summary": "b"}\n'})


def test_url_tar_gz_extracts(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "data" / "advertisegen"
    got = fetch_url_dataset("advertisegen", archive.as_uri(), out, sha256=_sha(archive))
    assert got == out
    assert (out / "AdvertiseGen" / "train.json").read_bytes().startswith(b'{"content"')
    assert [p.name for p in out.parent.iterdir()] == ["advertisegen"]  # no temp leftovers


def test_url_wrong_sha_leaves_nothing(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "data" / "advertisegen"
    with pytest.raises(FetchError) as ei:
        fetch_url_dataset("advertisegen", archive.as_uri(), out, sha256="0" * 64)
    msg = str(ei.value)
    assert "0" * 64 in msg and _sha(archive) in msg and "advertisegen" in msg and archive.as_uri() in msg
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_url_path_traversal_refused(tmp_path: Path, bad: str) -> None:
    arc = _tar_gz(tmp_path / "evil.tar.gz", {"ok.txt": b"ok", bad: b"pwned"})
    out = tmp_path / "data" / "evil"
    with pytest.raises(FetchError, match="unsafe"):
        fetch_url_dataset("evil", arc.as_uri(), out, sha256=None)
    assert not out.exists()
    assert not (tmp_path / "data" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_url_zip_extracts(tmp_path: Path) -> None:
    import zipfile

    arc = tmp_path / "d.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("x/dev.json", "{}")
    out = fetch_url_dataset("z", arc.as_uri(), tmp_path / "out", sha256=None)
    assert (out / "x" / "dev.json").read_text() == "{}"


def test_url_plain_json_saved(tmp_path: Path) -> None:
    src = tmp_path / "src" / "train.json"
    src.parent.mkdir()
    src.write_text(json.dumps([{"q": "hi"}]))
    out = tmp_path / "data" / "mine"
    fetch_url_dataset("mine", src.as_uri(), out, sha256=_sha(src))
    assert json.loads((out / "train.json").read_text()) == [{"q": "hi"}]


def test_url_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{DEAD}/x.tar.gz"
    out = tmp_path / "data" / "advertisegen"
    opened = spy(monkeypatch, urllib.request, "urlopen")
    with pytest.raises(FetchError) as ei:
        fetch_url_dataset("advertisegen", url, out, sha256=None, timeout=3)
    assert opened == [((url,), {"timeout": 3})]  # one try, bounded by the timeout: no retries
    msg = str(ei.value)
    assert "advertisegen" in msg and url in msg and "path" in msg
    assert not out.exists()


def test_hf_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed, downloads = spy(monkeypatch, fetch, "_reachable"), spy(monkeypatch, huggingface_hub, "snapshot_download")
    with pytest.raises(FetchError) as ei:
        fetch_model("glm", "huggingface", "THUDM/glm-4-9b-chat-hf", tmp_path / "m", None, cache_dir=tmp_path / "c")
    assert probed == [(("127.0.0.1", 9), {})] and downloads == []  # one short connect; the retrying hub never starts
    assert "THUDM/glm-4-9b-chat-hf" in str(ei.value) and "source: path" in str(ei.value)


def test_hf_local_files_only_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # counts as offline: no probe, straight to the cache
    probed, downloads = spy(monkeypatch, fetch, "_reachable"), spy(monkeypatch, huggingface_hub, "snapshot_download")
    with pytest.raises(FetchError) as ei:
        fetch_model("glm", "huggingface", "THUDM/glm-4-9b-chat-hf", tmp_path / "m", None, cache_dir=tmp_path / "c")
    assert probed == [] and [kwargs["local_files_only"] for _, kwargs in downloads] == [True]
    assert "THUDM/glm-4-9b-chat-hf" in str(ei.value) and "cache" in str(ei.value)


def test_modelscope_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelscope", None)  # makes `import modelscope` raise ImportError
    with pytest.raises(FetchError, match=r"\.\[modelscope\]"):
        fetch_model("glm", "modelscope", "ZhipuAI/glm-4-9b-chat", tmp_path / "m", None)


def test_link_local_model(tmp_path: Path) -> None:
    model = tmp_path / "weights"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / ".snakemake_timestamp").write_text("")
    out = tmp_path / "models" / "glm"
    assert link_local_model("glm", model, out) == out
    # a folder of its own, each entry a link into the model folder, hidden ones left out
    assert not out.is_symlink() and sorted(p.name for p in out.iterdir()) == ["config.json", "sub"]
    assert (out / "config.json").resolve() == (model / "config.json").resolve() and (out / "sub").is_dir()
    assert linked_model_source(out) == model.resolve() and linked_model_source(model) is None
    other = tmp_path / "weights2"
    other.mkdir()
    (other / "config.json").write_text('{"v": 2}')
    link_local_model("glm", other, out)  # replaces the existing folder
    assert (out / "config.json").read_text() == '{"v": 2}' and (model / "config.json").read_text() == "{}"
    shutil.rmtree(out)
    out.symlink_to(model, target_is_directory=True)  # one link to the whole folder, as made before
    link_local_model("glm", other, out)
    assert not out.is_symlink() and (out / "config.json").read_text() == '{"v": 2}'
    assert (model / "config.json").is_file()


def test_link_local_model_missing_config(tmp_path: Path) -> None:
    model = tmp_path / "weights"
    model.mkdir()
    with pytest.raises(FetchError, match="config.json") as ei:
        link_local_model("glm", model, tmp_path / "models" / "glm")
    assert str(model) in str(ei.value)
    assert not (tmp_path / "models" / "glm").exists()


def test_url_archive_without_suffix_is_recognised_by_content(tmp_path: Path) -> None:
    """The official AdvertiseGen link ends in `?dl=1`: the archive is known by its bytes, not its name."""
    archive = _tar_gz(tmp_path / "dl", {"AdvertiseGen/train.json": b'{"content": "a", "summary": "b"}\n'})
    out = fetch_url_dataset("advertisegen", archive.as_uri(), tmp_path / "out", sha256=None)
    assert (out / "AdvertiseGen" / "train.json").read_bytes().startswith(b'{"content"')


def test_fetch_dataset_demo_writes_advertisegen_files(tmp_path: Path) -> None:
    from glmtune.fetch import fetch_dataset

    out = fetch_dataset("demo", fetch_settings(source="demo", demo={"train_rows": 5, "dev_rows": 2, "seed": 0}), tmp_path / "d")
    assert len((out / "train.json").read_text(encoding="utf-8").splitlines()) == 5
    assert len((out / "dev.json").read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize(("url", "name"), [
    ("https://h/d/..%2F..%2Fpayload.json", "payload.json"), ("https://h/d/..%5C..%5Cp.json", "p.json"),
    ("https://h/x/train.json?dl=1", "train.json"), ("https://h/.bashrc", "bashrc"), ("https://h/", FALLBACK_NAME),
    ("https://h/..", FALLBACK_NAME), ("https://h/%2E%2E", FALLBACK_NAME), ("https://h/a%2F", FALLBACK_NAME),
    ("https://h/%00", FALLBACK_NAME),
])
def test_url_file_name_is_a_plain_base_name(url: str, name: str) -> None:
    assert url_file_name(url) == name


def test_url_with_encoded_separators_stays_in_its_folder(tmp_path: Path) -> None:
    """`..%2F..%2Fpayload.json` decodes to a path; the file lands inside the dataset folder as payload.json."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "payload.json").write_text("[]")
    repo = tmp_path / "repo"
    out = fetch_url_dataset("x", (tmp_path / "a" / "b").as_uri() + "/..%2F..%2Fpayload.json", repo / "resources" / "x", sha256=None)
    assert [p.name for p in out.iterdir()] == ["payload.json"]
    assert [p.name for p in repo.iterdir()] == ["resources"] and [p.name for p in (repo / "resources").iterdir()] == ["x"]


def _writable_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_mode & 0o222]


def test_fetched_and_generated_datasets_are_read_only(tmp_path: Path, archive: Path) -> None:
    """An edit inside resources/datasets/<name>/ is never seen by Snakemake (one directory output): refuse it."""
    from glmtune.fetch import fetch_dataset

    out = fetch_url_dataset("advertisegen", archive.as_uri(), tmp_path / "url", sha256=None)
    assert (out / "AdvertiseGen" / "train.json").is_file() and _writable_files(out) == []
    fetch_url_dataset("advertisegen", archive.as_uri(), out, sha256=None)  # fetching again replaces the read-only files
    demo = fetch_settings(source="demo", demo={"train_rows": 3, "dev_rows": 1, "seed": 0})
    out = fetch_dataset("demo", demo, tmp_path / "demo")
    assert sorted(p.name for p in out.iterdir()) == ["dev.json", "train.json"] and _writable_files(out) == []
    fetch_dataset("demo", demo, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folders left


@pytest.mark.parametrize("file", ["/etc/hostname", "../x.json", "AdvertiseGen/../../x.json", "C:/x.json", "..\\x.json",
                                  "", "."])
def test_a_url_datasets_file_outside_the_download_is_refused(file: str) -> None:
    problem = fetched_file_problem("url", file)
    assert problem is not None and problem.startswith(f"not a file inside the download: {file!r}")


@pytest.mark.parametrize(("source", "file"), [("url", "AdvertiseGen/train.json"), ("url", "train.json"),
                                              ("demo", "train.json"), ("demo", "dev.json"), ("path", "/data/x.json")])
def test_a_fetched_datasets_good_file_passes(source: str, file: str) -> None:
    assert fetched_file_problem(source, file) is None


def test_a_demo_file_the_generator_does_not_write_is_refused(tmp_path: Path) -> None:
    from glmtune.data.synthetic import write_advertisegen

    written = sorted(path.name for path in write_advertisegen(tmp_path, 2, 2, 0).values())
    problem = fetched_file_problem("demo", "Train.json")
    assert problem is not None and problem.startswith("no such demo file 'Train.json': the demo source writes ")
    assert sorted(problem.rsplit("writes ", 1)[1].split(", ")) == written
    assert all(fetched_file_problem("demo", name) is None for name in written)


def test_a_member_the_download_does_not_hold_stops_listing_what_it_holds(tmp_path: Path, archive: Path) -> None:
    out = fetch_url_dataset("advertisegen", archive.as_uri(), tmp_path / "ds", sha256=None)
    assert fetched_member(out, "AdvertiseGen/train.json", "advertisegen", "all") == out / "AdvertiseGen/train.json"
    for missing in ("AdvertiseGen/dev.json", "AdvertiseGen"):  # a folder is no file either
        with pytest.raises(FetchError) as ei:
            fetched_member(out, missing, "advertisegen", "test")
        assert str(ei.value) == (f"datasets.advertisegen.files.test: {out} holds no file {missing!r}; it holds 1: "
                                 "AdvertiseGen/train.json")


def test_a_long_listing_says_how_many_it_leaves_out(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"f{i:02d}.json").write_text("")
    with pytest.raises(FetchError, match=r"it holds 25: f00.json, .*f19.json and 5 more$"):
        fetched_member(tmp_path, "x.json", "d", "all")


def test_fetched_members_refuse_one_shard_of_several(tmp_path: Path) -> None:
    """A download's shards are known only once it is there: one named alone stops its convert job."""
    for index in range(2):
        (tmp_path / f"train-{index:05d}-of-00002.parquet").write_bytes(b"PAR1")
    with pytest.raises(FetchError, match=r"datasets.d.files.train: .*train-00000-of-00002.parquet is one shard of "
                                         r"several, and 1 more beside it would be left out \(train-00001-of-00002.parquet\)"):
        fetched_members(tmp_path, "train-00000-of-00002.parquet", "d", "train")
    names = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert fetched_members(tmp_path, names, "d", "train") == [tmp_path / name for name in names]


def test_a_cut_archive_is_named_with_its_dataset_and_url(tmp_path: Path) -> None:
    """A gzip stream cut short raised a bare EOFError from tarfile."""
    big = _tar_gz(tmp_path / "whole.tar.gz", {"AdvertiseGen/train.json": bytes(range(256)) * 4000})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(big.read_bytes()[:3000])
    out = tmp_path / "data" / "adgen"
    with pytest.raises(FetchError, match=rf"dataset 'adgen': could not extract {cut.as_uri()} \("):
        fetch_url_dataset("adgen", cut.as_uri(), out, None)
    assert not out.exists()


def test_a_cached_download_of_another_repo_is_started_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The cache folder is named by model.name: snapshot_download into it kept the old repo's files (offline it
    returned them as they were), and the record named the new repo."""
    seen: list[list[str]] = []

    def download(name: str, source: str, repo_id: str, folder: Path, *args: Any, **kwargs: Any) -> Path:
        seen.append(sorted(path.name for path in folder.iterdir()) if folder.exists() else [])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{repo_id.replace('/', '_')}.safetensors").write_bytes(b"")
        return folder

    monkeypatch.setattr(fetch, "fetch_model", download)
    spec = {"source": "huggingface", "repo_id": "THUDM/glm-4-9b-chat-hf", "revision": None}
    fetch.download_model("glm", spec, tmp_path / "cache", tmp_path / "glm.json")
    fetch.download_model("glm", spec, tmp_path / "cache", tmp_path / "glm.json")  # the same repo: resumed in place
    with caplog.at_level("WARNING"):
        fetch.download_model("glm", {**spec, "repo_id": "someone/other"}, tmp_path / "cache", tmp_path / "glm.json")
    assert seen == [[], ["THUDM_glm-4-9b-chat-hf.safetensors"], []]
    assert "holds huggingface THUDM/glm-4-9b-chat-hf (revision None), not huggingface someone/other" in caplog.text
    assert json.loads((tmp_path / "glm.json").read_text())["repo_id"] == "someone/other"
