"""nslab.data: loaders for every dataset kind (small fixtures in the real on-disk formats), the decoded
cache, clear errors for bad roots, and batched augmentation distributed like torchvision's transforms."""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nslab import data as D
from nslab import io, paths
from nslab.data import (
    CIFAR10_CLASSES,
    DatasetLayoutError,
    DeviceBatches,
    dataset_spec,
    load_dataset,
    synthetic_data,
)
from nslab.data import batches as data_batches
from nslab.data import cache as data_cache

# --------------------------------------------------------------------------------------------------------
# fixtures written in the real formats


def _class_image(label: int, size: int, k: int) -> np.ndarray:
    """An (H, W, 3) uint8 image whose red channel encodes the label and green the sample number."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[..., 0] = label
    img[..., 1] = k
    img[..., 2] = 7
    return img


def write_cifar10_batches(root: Path, per_batch: int = 4, test: int = 6) -> None:
    """torchvision's cifar-10-batches-py: pickled dicts with a (N, 3072) uint8 'data' row-major CHW."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        data[:, 0, 0, 0] = labels  # the label is readable from the pixels
        return {b"batch_label": b"x", b"labels": labels, b"data": data.reshape(n, 3072), b"filenames": []}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch, i), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test, 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}, f)


def write_image_folder(
    root: Path, classes, per_class: int = 2, size: int = 32, test_name: str = "test", labels=None
) -> None:
    """ROOT/train/<class>/NNNN.png and ROOT/<test_name>/<class>/NNNN.png; pixels encode ``labels[i]``."""
    labels = range(len(classes)) if labels is None else labels
    for split, n in (("train", per_class), (test_name, 1)):
        for label, c in zip(labels, classes):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(_class_image(label, size, k)).save(d / f"{k:04d}.png")


TINY_WNIDS = [f"n{i:08d}" for i in range(200)]


def _bits_image(value: int, size: int = 64) -> np.ndarray:
    """An (H, W, 3) image showing ``value`` (< 2**16) as a 4x4 grid of black/white blocks (survives JPEG)."""
    bits = np.array([(value >> i) & 1 for i in range(16)], dtype=np.uint8).reshape(4, 4) * 255
    return np.repeat(np.repeat(bits, size // 4, 0), size // 4, 1)[..., None].repeat(3, 2)


def _read_bits(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_bits_image` for a (N, 3, H, W) batch -> (N,) int64."""
    n, _, h, _ = x.shape
    blocks = x.float().mean(1).view(n, 4, h // 4, 4, h // 4).mean((2, 4)) > 127
    return (blocks.view(n, 16).long() << torch.arange(16)).sum(1)


def write_tiny(root: Path, val_per_class: int = 3) -> Path:
    """A miniature tiny-imagenet-200: 200 wnids (listed unsorted), 1 train image each, val regrouped.

    Every image shows ``label + 256 * sample_number`` as bit blocks.
    """
    base = root / "tiny-imagenet-200"
    wnids = list(reversed(TINY_WNIDS))  # wnids.txt is not sorted in the official release either
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    label = {w: k for k, w in enumerate(sorted(wnids))}
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        Image.fromarray(_bits_image(label[w])).save(d / f"{w}_0.JPEG")
        (base / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    (base / "val" / "images").mkdir(parents=True)
    lines, i = [], 0
    for k in range(val_per_class):
        for w in wnids:  # interleaved like the official file: classes appear in mixed order
            name = f"val_{i}.JPEG"
            Image.fromarray(_bits_image(label[w] + 256 * k)).save(base / "val" / "images" / name)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
            i += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images").mkdir(parents=True)  # the official unlabelled test set
    return base


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --------------------------------------------------------------------------------------------------------
# loaders


def test_synthetic_data_is_a_pure_function_of_its_seed():
    a, b, c = synthetic_data(seed=1), synthetic_data(seed=1), synthetic_data(seed=2)
    assert a.train_x.shape == (640, 3, 32, 32) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (320, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_y.bincount().tolist() == [64] * 10
    assert a.spec.name == "synthetic" and a.spec.num_classes == 10 and a.spec.variant == "cifar"


def test_cifar10_pickles_load(tmp_path: Path, cache: Path):
    write_cifar10_batches(tmp_path)
    d = load_dataset("cifar10", tmp_path, download=False, cache_dir=cache, progress=False)
    assert d.spec == dataset_spec("cifar10")
    assert d.classes == CIFAR10_CLASSES
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert torch.equal(d.train_x[:, 0, 0, 0].long(), d.train_y)
    assert torch.equal(d.test_x[:, 0, 0, 0].long(), d.test_y)
    # the extracted folder itself is accepted as the root too
    e = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", download=False, cache_dir=cache, progress=False)
    assert torch.equal(e.train_x, d.train_x)


def test_cifar10_image_folder_loads_with_torchvision_class_order(tmp_path: Path, cache: Path):
    # sorted folder names are torchvision's CIFAR-10 order; folder creation order must not matter
    assert tuple(sorted(CIFAR10_CLASSES)) == CIFAR10_CLASSES
    order = list(reversed(CIFAR10_CLASSES))
    write_image_folder(tmp_path, order, labels=[CIFAR10_CLASSES.index(c) for c in order])
    d = load_dataset("cifar10", tmp_path, download=False, cache_dir=cache, progress=False)
    assert d.classes == CIFAR10_CLASSES
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32)
    # PNG pixels are exact, and every image's label matches its folder
    assert torch.equal(d.train_x[:, 0, 5, 5].long(), d.train_y)
    assert torch.equal(d.test_x[:, 0, 5, 5].long(), d.test_y)
    assert set(d.train_x[:, 1, 0, 0].tolist()) == {0, 1} and (d.train_x[:, 2] == 7).all()


def test_folder_cache_is_reused_and_invalidated(tmp_path: Path, cache: Path, monkeypatch):
    root = tmp_path / "data"
    write_image_folder(root, CIFAR10_CLASSES)
    first = load_dataset("cifar10", root, cache_dir=cache, progress=False)
    assert len(list((cache / "decoded").glob("*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(data_cache, "_decode_files", no_decoding)
    second = load_dataset("cifar10", root, cache_dir=cache, progress=False)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    monkeypatch.undo()

    Image.fromarray(_class_image(3, 32, 9)).save(root / "train" / "cat" / "0009.png")  # the tree changed
    third = load_dataset("cifar10", root, cache_dir=cache, progress=False)
    assert third.num_train == 21 and (third.train_y == 3).sum() == 3


def test_val_folder_and_numeric_class_names(tmp_path: Path, cache: Path):
    names = [str(i) for i in range(100)]  # "10" must not sort before "2"
    write_image_folder(tmp_path, names, per_class=1, test_name="val")
    d = load_dataset("cifar100", tmp_path, cache_dir=cache, progress=False)
    assert d.classes == tuple(names)
    assert torch.equal(d.test_x[:, 0, 0, 0].long(), d.test_y)


def test_tiny_imagenet_folder_and_zip(tmp_path: Path, cache: Path):
    base = write_tiny(tmp_path)
    d = load_dataset("tinyimagenet", tmp_path, cache_dir=cache, progress=False, tiny_test_per_class=2)
    assert d.classes == tuple(TINY_WNIDS)  # sorted wnids, as ImageFolder on train/ in the release
    assert d.train_x.shape == (200, 3, 64, 64) and d.test_x.shape == (400, 3, 64, 64)
    assert d.test_y.bincount().tolist() == [2] * 200
    code = _read_bits(d.test_x)
    assert torch.equal(code % 256, d.test_y)
    assert torch.equal(_read_bits(d.train_x), d.train_y)
    # the first images per class in file-name order: sample numbers 0 and 1, never 2
    assert (code // 256).bincount().tolist() == [200, 200]

    full = load_dataset("tinyimagenet", base, cache_dir=cache, progress=False, tiny_test_per_class=None)
    assert full.num_test == 600

    zpath = tmp_path / "zipped" / "tiny-imagenet-200.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(base.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(tmp_path).as_posix())
    zd = load_dataset("tinyimagenet", zpath.parent, cache_dir=cache, progress=False, tiny_test_per_class=2)
    assert torch.equal(zd.train_x, d.train_x) and torch.equal(zd.test_x, d.test_x)
    assert torch.equal(zd.test_y, d.test_y)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "afile").write_text("x") and p / "afile", "is a file"),
        (lambda p: (p / "train" / "a").mkdir(parents=True) or p, "holds no readable layout"),
    ],
)
def test_bad_data_roots_name_the_path_and_the_layouts(tmp_path: Path, make, match):
    root = make(tmp_path)
    with pytest.raises(DatasetLayoutError, match=match) as e:
        load_dataset("cifar10", root, download=False, cache_dir=tmp_path / "c", progress=False)
    assert str(root) in str(e.value) and "ImageFolder" in str(e.value) and "cifar-10-batches-py" in str(e.value)


def test_wrong_class_count_and_image_size_are_reported(tmp_path: Path):
    write_image_folder(tmp_path / "a", ["x", "y"])
    with pytest.raises(DatasetLayoutError, match="2 class folders; dataset 'cifar10' has 10"):
        load_dataset("cifar10", tmp_path / "a", cache_dir="", progress=False)
    write_image_folder(tmp_path / "b", CIFAR10_CLASSES, size=28)
    with pytest.raises(ValueError, match=r"28, 28\) pixels; this dataset needs 32x32"):
        load_dataset("cifar10", tmp_path / "b", cache_dir="", progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", tmp_path)


def test_data_root_resolution(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("NSLAB_DATA", str(tmp_path / "env"))
    assert D.resolve_data_root(tmp_path / "x") == tmp_path / "x"
    assert D.resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("NSLAB_DATA")
    monkeypatch.setenv("NSLAB_CACHE", str(tmp_path / "cache"))
    assert D.resolve_data_root() == tmp_path / "cache" / "data"
    monkeypatch.delenv("NSLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.resolve_data_root() == tmp_path / "xdg" / "nslab" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.resolve_data_root() == tmp_path / "home" / ".cache" / "nslab" / "data"
    # one home: nslab.data re-exports nslab.paths' functions, and io no longer has its own copy
    assert D.resolve_data_root is paths.resolve_data_root and D.default_cache_dir is paths.default_cache_dir
    assert not hasattr(io, "data_root")


def test_subsets():
    d = synthetic_data()
    first = d.subset(50, "first")
    assert first.num_train == 50 and torch.equal(first.train_x, d.train_x[:50])
    bal = d.subset(55, "balanced", seed=3)
    assert bal.train_y.bincount().tolist() == [6] * 5 + [5] * 5
    assert torch.equal(bal.train_x, d.subset(55, "balanced", seed=3).train_x)
    assert bal.num_test == d.num_test
    with pytest.raises(ValueError, match="unknown subset mode"):
        d.subset(5, "random")


def test_subsets_of_a_class_sorted_dataset_hold_every_class():
    # folder datasets are stored class by class: subsets must not be "the first classes"
    d = synthetic_data(train_per_class=8, test_per_class=6)
    order = torch.argsort(d.test_y, stable=True)
    d = dataclasses.replace(d, train_x=d.train_x[torch.argsort(d.train_y, stable=True)],
                            train_y=d.train_y.sort(stable=True).values, test_x=d.test_x[order], test_y=d.test_y[order])
    assert d.subset(20).train_y.bincount().tolist() == [2] * 10  # the default mode is balanced
    t = d.test_subset(25)
    assert t.test_y.bincount().tolist() == [3] * 5 + [2] * 5 and t.num_train == d.num_train
    # deterministic: the first images of each class, in storage order
    assert torch.equal(t.test_x[:3], d.test_x[:3]) and torch.equal(t.test_x[3:6], d.test_x[6:9])
    assert d.test_subset(10_000) is d
    short = dataclasses.replace(d, test_x=d.test_x[2:], test_y=d.test_y[2:])  # class 0 keeps 4 of 6
    with pytest.raises(ValueError, match="class 0 has 4 images, 6 requested"):
        short.test_subset(57)


# --------------------------------------------------------------------------------------------------------
# augmentation and batches


def _decode_crop_flip(out: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 ``(dy, dx, flip)`` of augmented coordinate markers (channel 0: column + 1, 1: row + 1).

    Output columns 15/16 and row 16 always come from inside the image for offsets in 0..8.
    """
    col15, col16 = out[:, 0, 16, 15].long(), out[:, 0, 16, 16].long()
    flip = col16 < col15
    dx = torch.where(flip, col16 - 12, col16 - 13)
    dy = out[:, 1, 16, 16].long() - 13
    return torch.stack([dy, dx, flip.long()], 1)


def _marker() -> torch.Tensor:
    ar = torch.arange(1, 33, dtype=torch.uint8)
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[0] = ar.view(1, 32)
    img[1] = ar.view(32, 1)
    img[2] = 255
    return img


def test_crop_flip_is_exactly_the_stated_map():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    dy = torch.tensor([0, 8, 4, 2, 7])
    dx = torch.tensor([8, 0, 4, 5, 1])
    flip = torch.tensor([False, True, False, True, True])
    out = D.crop_flip(x, dy, dx, flip)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(5):
        ref = padded[b, :, dy[b] : dy[b] + 32, dx[b] : dx[b] + 32]
        ref = ref.flip(-1) if flip[b] else ref
        assert torch.equal(out[b], ref)


def test_crop_flip_statistics_match_torchvision():
    from torchvision import transforms as T

    n = 2000
    marker = _marker()
    pil = Image.fromarray(marker.permute(1, 2, 0).numpy())
    tv = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.PILToTensor()])
    torch.manual_seed(0)
    ref_imgs = torch.stack([tv(pil) for _ in range(n)])

    spec = dataset_spec("cifar10")
    batches = DeviceBatches(marker.expand(n, 3, 32, 32), torch.zeros(n, dtype=torch.long), spec, "cpu", n, train=True)
    normed = next(batches.iterate(seed=1))[0]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    ours_imgs = ((normed * std + mean) * 255).round().to(torch.uint8)  # undo the normalisation

    for imgs in (ref_imgs, ours_imgs):
        p = _decode_crop_flip(imgs)
        assert p[:, :2].min() >= 0 and p[:, :2].max() <= 8
        # each image is exactly the crop/flip its markers claim: zero fill, no interpolation
        assert torch.equal(imgs, D.crop_flip(marker.expand(n, 3, 32, 32), p[:, 0], p[:, 1], p[:, 2].bool()))

    ref, ours = _decode_crop_flip(ref_imgs), _decode_crop_flip(ours_imgs)
    for name, col, k in (("dy", 0, 9), ("dx", 1, 9), ("flip", 2, 2)):
        a = ref[:, col].bincount(minlength=k).double()
        b = ours[:, col].bincount(minlength=k).double()
        # chi-square test of homogeneity; its 99.9% quantile is 26.1 for 8 dof, 10.8 for 1 dof
        e = (a + b) / 2
        chi2 = float((((a - e) ** 2 + (b - e) ** 2) / e).sum())
        assert chi2 < (26.1 if k == 9 else 10.8), (name, a.tolist(), b.tolist())
        assert b.min() > 0.8 * n / k, (name, b.tolist())  # and both are uniform


def test_crop_rotate_flip_matches_pil_rotation():
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, size=(6, 3, 64, 64), dtype=np.uint8))
    dy = torch.tensor([0, 8, 4, 3, 4, 6])
    dx = torch.tensor([8, 0, 4, 1, 4, 2])
    angle = torch.tensor([0.0, 0.0, 17.0, -12.5, 90.0, 5.0])
    flip = torch.tensor([False, True, False, True, False, True])
    out = D.crop_rotate_flip(x.float(), dy, dx, angle, flip).round().to(torch.uint8)
    for b in range(6):
        pil = TF.to_pil_image(x[b])
        pil = TF.crop(TF.pad(pil, 4), int(dy[b]), int(dx[b]), 64, 64)
        pil = TF.rotate(pil, float(angle[b]))  # nearest, zero fill, about the centre: the release's setting
        if flip[b]:
            pil = TF.hflip(pil)
        ref = TF.pil_to_tensor(pil)
        agree = (out[b] == ref).all(0).float().mean().item()
        # identical up to samples that fall exactly between two pixels (rounding conventions)
        assert agree > (0.999 if angle[b] % 90 == 0 else 0.97), (b, agree)


def test_device_batches_are_seeded_and_test_batches_are_plain():
    d = synthetic_data()
    tr = DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 100, train=True)
    a = list(tr.iterate(seed=5))
    b = list(tr.iterate(seed=5))
    c = list(tr.iterate(seed=6))
    assert len(a) == len(tr) == 7 and a[-1][0].shape == (40, 3, 32, 32)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    # every training image is served once per pass
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(d.train_y.tolist())
    assert len(DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 100, train=True, drop_last=True)) == 6

    te = DeviceBatches(d.test_x, d.test_y, d.spec, "cpu", 128, channels_last=True)
    x0, y0 = next(iter(te))
    assert x0.is_contiguous(memory_format=torch.channels_last)
    from torchvision import transforms as T

    ref = T.Normalize(d.spec.mean, d.spec.std)(d.test_x[:128].float() / 255)
    torch.testing.assert_close(x0, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(y0, d.test_y[:128])


@pytest.mark.parametrize("image_size, drop_last", [(32, False), (64, False), (32, True)])
def test_resumed_pass_is_the_tail_of_the_whole_pass(monkeypatch, image_size: int, drop_last: bool):
    # CIFAR variant (crop + flip) and TinyImageNet variant (crop + rotation + flip); N = 70 or 40 is not a
    # multiple of the batch size, so the last batch is short (or dropped)
    d = synthetic_data(num_classes=2 if image_size == 32 else 4, train_per_class=35 if image_size == 32 else 10,
                       image_size=image_size)
    assert d.spec.variant == ("cifar" if image_size == 32 else "tiny")
    tr = DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 16, train=True, drop_last=drop_last)
    whole = list(tr.iterate(11))
    assert len(whole) == len(tr) >= 3
    built = []
    real = data_batches.augment
    monkeypatch.setattr(data_batches, "augment", lambda x, *a: built.append(len(x)) or real(x, *a))
    for k in sorted({0, 1, len(tr) // 2, len(tr) - 1}):
        built.clear()
        tail = list(tr.iterate(11, start=k))
        assert len(tail) == len(whole) - k
        for (x, y), (xr, yr) in zip(tail, whole[k:]):
            assert torch.equal(x, xr) and torch.equal(y, yr)
        assert len(built) == len(tail)  # skipped batches replay their draws but build no images
    assert list(tr.iterate(11, start=len(tr))) == [] and list(tr.iterate(11, start=len(tr) + 5)) == []


def test_resume_start_is_checked_and_plain_passes_resume_too():
    d = synthetic_data()
    tr = DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 100, train=True)
    with pytest.raises(ValueError, match="start must be >= 0, got -3"):
        tr.iterate(1, start=-3)  # at the call, not at the first batch
    for kw in ({"train": True, "augment": False}, {}):  # shuffle only; test split (no generator)
        b = DeviceBatches(d.train_x, d.train_y, d.spec, "cpu", 100, **kw)
        whole = list(b.iterate(2))
        tail = list(b.iterate(2, start=4))
        assert len(tail) == 3
        assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(tail, whole[4:]))
