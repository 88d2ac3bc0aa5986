from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from fmae import data
from fmae.errors import DataError
from tests.helpers import STEMS, idx_bytes, write_dataset


def test_load_gz_and_raw_give_the_same_tensors(tmp_path):
    sums = write_dataset(tmp_path / "gz", gz=True)
    write_dataset(tmp_path / "raw", gz=False)
    a = data.load(tmp_path / "gz", checksums=sums)
    b = data.load(tmp_path / "raw", checksums=sums)
    assert a.train_images.dtype == torch.uint8 and a.train_images.shape == (64, 784)
    assert a.test_images.shape == (16, 784) and a.train_labels.shape == (64,)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert a.sha256 == sums


def test_loading_the_test_split_alone_never_reads_the_training_files(tiny_dir):
    directory, sums = tiny_dir
    full = data.load(directory, checksums=sums)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (directory / (stem + ".gz")).write_bytes(b"not gzip")  # would fail if read
    test_only = data.load(directory, checksums=sums, splits=("test",))
    assert torch.equal(test_only.test_images, full.test_images) and torch.equal(test_only.test_labels, full.test_labels)
    assert test_only.train_images is None and test_only.train_labels is None
    assert set(test_only.sha256) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert test_only.subset(4, 3).test_images.shape == (3, 784) and test_only.to("cpu").train_images is None
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: corrupted"):
        data.load(directory, checksums=sums)


def test_parse_idx_rejects_wrong_magic_and_truncation():
    good = idx_bytes(True, 3)
    assert data.parse_idx(good, "x", images=True)[0] == 3
    with pytest.raises(DataError, match="wrong magic number 0x00000801"):
        data.parse_idx(idx_bytes(False, 3), "x", images=True)
    with pytest.raises(DataError, match="truncated"):
        data.parse_idx(good[:-10], "x", images=True)
    with pytest.raises(DataError, match="truncated IDX file"):
        data.parse_idx(good[:6], "x", images=True)
    with pytest.raises(DataError, match="trailing bytes"):
        data.parse_idx(good + b"\0", "x", images=True)


def test_truncated_gzip_names_the_file(tiny_dir):
    directory, sums = tiny_dir
    path = directory / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: corrupted or truncated gzip"):
        data.load(directory, checksums=sums)


def test_checksum_mismatch_names_the_file(tiny_dir):
    directory, sums = tiny_dir
    bad = dict(sums, **{"t10k-labels-idx1-ubyte": "0" * 64})
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        data.load(directory, checksums=bad)


def test_real_checksums_reject_a_synthetic_file(tiny_dir):
    directory, _ = tiny_dir
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load(directory)


def test_search_order(tmp_path):
    sums = {s: None for s in STEMS}
    places = {name: tmp_path / name for name in ("flag", "env", "cache", "system")}
    for p in places.values():
        write_dataset(p)
    env = {"FMAE_DATA_DIR": str(places["env"]), "XDG_CACHE_HOME": str(places["cache"].parent / "xdg")}
    write_dataset(data.user_cache_dir(env))
    kw = dict(environ=env, system_dir=places["system"], checksums=sums, download=False)
    assert data.locate(places["flag"], **kw) == places["flag"]
    assert data.locate(None, **kw) == places["env"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--data-dir .*empty: missing train-images-idx3-ubyte"):
        data.locate(tmp_path / "empty", **kw)  # a path the user typed is used or refused, never passed over
    del env["FMAE_DATA_DIR"]
    assert data.locate(None, **kw) == data.user_cache_dir(env)
    shutil.rmtree(data.user_cache_dir(env))
    assert data.locate(None, **kw) == places["system"]


def test_an_explicit_data_dir_is_used_or_refused_naming_what_is_missing(tmp_path):
    sums = {s: None for s in STEMS}
    write_dataset(tmp_path / "sys")
    kw = dict(environ={}, system_dir=tmp_path / "sys", checksums=sums, download=False)
    assert data.locate(None, **kw) == tmp_path / "sys"  # the fallback that must not be taken below
    with pytest.raises(DataError, match=r"--data-dir \S*nope: no such directory \(hint: "):
        data.locate(tmp_path / "nope", **kw)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"--data-dir \S*file: not a directory"):
        data.locate(tmp_path / "file", **kw)
    write_dataset(tmp_path / "part")
    (tmp_path / "part" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"--data-dir \S*part: missing t10k-labels-idx1-ubyte\[\.gz\] \(hint"):
        data.locate(tmp_path / "part", **kw)


def test_missing_data_lists_every_place_and_both_remedies(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    with pytest.raises(DataError) as info:
        data.locate(None, environ=env, system_dir=tmp_path / "sys", download=False)
    text = str(info.value)
    for place in ("--data-dir (not set)", "$FMAE_DATA_DIR (not set)", str(tmp_path / "xdg"), str(tmp_path / "sys")):
        assert place in text
    assert "apt-get install dataset-fashion-mnist" in text and "--no-download" in text


def test_download_through_a_fake_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    sums = write_dataset(mirror)
    fetched = []

    def fetch(url: str, root: str, filename: str) -> None:  # what torchvision's download_url does
        fetched.append(url)
        shutil.copy(mirror / url.rsplit("/", 1)[1], Path(root) / filename)

    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    found = data.locate(None, environ=env, system_dir=tmp_path / "sys", fetch=fetch, checksums=sums)
    assert found == data.user_cache_dir(env)
    assert sorted(u.rsplit("/", 1)[1] for u in fetched) == sorted(s + ".gz" for s in STEMS)
    assert all(u.startswith("http") for u in fetched)  # torchvision's mirror list
    assert data.load(found, checksums=sums).train_images.shape == (64, 784)
    assert not list(found.glob(".download-*"))


def test_download_failure_tries_each_mirror_then_explains(tmp_path):
    def fetch(url, root, filename):
        raise OSError("network unreachable")

    with pytest.raises(DataError, match="download of train-images-idx3-ubyte.gz failed.*network unreachable"):
        data.fetch_dataset(tmp_path / "c", fetch=fetch, mirrors=("http://a/", "http://b/"))
    assert not list((tmp_path / "c").iterdir())


def test_corrupted_download_is_not_kept(tmp_path):
    def fetch(url, root, filename):
        (Path(root) / filename).write_bytes(gzip.compress(b"junk"))

    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch_dataset(tmp_path / "c", fetch=fetch, mirrors=("http://a/",))
    assert not list((tmp_path / "c").iterdir())


@pytest.mark.dataset
def test_real_dataset_loads_and_verifies(real_data_dir):
    real = data.load(real_data_dir)
    assert real.train_images.shape == (60000, 784) and real.test_images.shape == (10000, 784)
    assert int(real.train_labels.bincount().min()) == 6000
    assert real.sha256 == dict(data.CHECKSUMS)


def test_find_and_load_says_where_the_data_came_from(fake_dataset):
    said = []
    dataset = data.find_and_load(None, download=False, device="cpu", splits=("test",), on_found=said.append)
    assert said == [f"data: {fake_dataset} (checksums ok)"]
    assert dataset.train_images is None and dataset.test_images.shape == (16, 784)
