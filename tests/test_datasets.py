"""Dataset loaders on files written in each dataset's real on-disk format (no network)."""
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from nntransfer.configs import ConfigError
from nntransfer.dataset import NORMALIZATION, image_dataset_loader, unshuffled

TASK = "img_classification"


def sizes(loaders):
    return {split: {k: len(v.dataset) for k, v in tasks.items()} for split, tasks in loaders.items()}


def all_labels(loader):
    return torch.cat([batch[1] for batch in unshuffled(loader)])


# -- writers for the real formats --------------------------------------------------------------------
def write_idx(root, folder, n_train=60, n_test=20, seed=0):
    rng = np.random.RandomState(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def write_cifar(root, classes, n_train=50, n_test=20, seed=0):
    rng = np.random.RandomState(seed)
    label_key = "labels" if classes == 10 else "fine_labels"

    def batch(n):
        return {"data": rng.randint(0, 256, (n, 3072), dtype=np.uint8), label_key: list(np.arange(n) % classes)}

    if classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for i in range(1, 6):
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // 5)))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test)))
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir()
        (folder / "train").write_bytes(pickle.dumps(batch(n_train)))
        (folder / "test").write_bytes(pickle.dumps(batch(n_test)))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def write_svhn(root, n_train=40, n_test=20, seed=0):
    from scipy.io import savemat

    rng = np.random.RandomState(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10) + 1  # SVHN stores digit 0 as 10
        savemat(root / f"{split}_32x32.mat", {"X": rng.randint(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                              "y": labels.reshape(-1, 1).astype(np.uint8)})


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=6, seed=0):
    rng = np.random.RandomState(seed)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")


@pytest.fixture
def skip_md5(monkeypatch):
    """The fake files cannot match torchvision's md5 sums of the real archives; everything else is real."""
    import torchvision

    for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.SVHN):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_like_from_idx_files(tmp_path, name):
    write_idx(tmp_path, name)
    loaders = image_dataset_loader(seed=1, dataset_cls=name, data_dir=str(tmp_path), valid_size=0.25, batch_size=8)
    assert sizes(loaders) == {"train": {TASK: 45}, "validation": {TASK: 15}, "test": {TASK: 20}}
    x, y = next(iter(loaders["train"][TASK]))
    assert x.shape == (8, 1, 28, 28) and y.dtype == torch.long


@pytest.mark.parametrize("name,classes", [("CIFAR10", 10), ("CIFAR100", 100)])
def test_cifar_from_python_pickles(tmp_path, skip_md5, name, classes):
    write_cifar(tmp_path, classes)
    loaders = image_dataset_loader(seed=1, dataset_cls=name, data_dir=str(tmp_path), valid_size=0.2, batch_size=10,
                                   apply_augmentation=True)
    assert sizes(loaders) == {"train": {TASK: 40}, "validation": {TASK: 10}, "test": {TASK: 20}}
    assert loaders["train"][TASK].dataset.num_classes == classes
    x, _ = next(iter(loaders["train"][TASK]))
    assert x.shape == (10, 3, 32, 32)


def test_svhn_from_mat_files(tmp_path, skip_md5):
    write_svhn(tmp_path)
    loaders = image_dataset_loader(seed=1, dataset_cls="SVHN", data_dir=str(tmp_path), valid_size=0.0, batch_size=8)
    assert sizes(loaders)["train"] == {TASK: 40}
    assert set(all_labels(loaders["test"][TASK]).tolist()) == set(range(10))  # label 10 read as digit 0


def test_image_folder(tmp_path):
    write_image_folder(tmp_path)
    loaders = image_dataset_loader(seed=1, dataset_cls="ImageFolder", data_dir=str(tmp_path), valid_size=0.0,
                                   batch_size=4, input_width=8, input_height=8)
    assert sizes(loaders)["test"] == {TASK: 18}
    x, y = next(iter(loaders["test"][TASK]))
    assert x.shape == (4, 3, 8, 8) and loaders["test"][TASK].dataset.num_classes == 3


def test_missing_files_give_the_path_and_the_download_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"MNIST not found under .*download=True"):
        image_dataset_loader(seed=1, dataset_cls="MNIST", data_dir=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="unknown dataset 'MNISTT' in ImageDatasetConfig.dataset_cls. Did you mean 'MNIST'"):
        image_dataset_loader(seed=1, dataset_cls="MNISTT")


def test_digits_split_sizes_disjoint_and_reproducible():
    a = image_dataset_loader(seed=1, dataset_cls="digits", valid_size=0.2)
    b = image_dataset_loader(seed=1, dataset_cls="digits", valid_size=0.2)
    c = image_dataset_loader(seed=2, dataset_cls="digits", valid_size=0.2)
    n_train, n_valid = len(a["train"][TASK].dataset), len(a["validation"][TASK].dataset)
    assert n_train + n_valid == 1437 and n_valid == round(0.2 * 1437)  # 80% of 1797 digits
    assert len(a["test"][TASK].dataset) == 360

    def pixels(loader):
        return {tuple(x.flatten().tolist()) for batch in unshuffled(loader) for x in batch[0]}

    assert pixels(a["train"][TASK]).isdisjoint(pixels(a["validation"][TASK]))
    assert pixels(a["validation"][TASK]) == pixels(b["validation"][TASK])
    assert pixels(a["validation"][TASK]) != pixels(c["validation"][TASK])


def test_filters_keep_exactly_what_they_should():
    loaders = image_dataset_loader(seed=1, dataset_cls="digits", filter_classes=[3, 7], examples_per_class=12,
                                   valid_size=0.25)
    for split in ("train", "validation", "test"):
        assert set(all_labels(loaders[split][TASK]).tolist()) == {3, 7}
    train, valid = all_labels(loaders["train"][TASK]), all_labels(loaders["validation"][TASK])
    assert len(train) + len(valid) == 24  # 12 per class before the validation split
    test_counts = torch.bincount(all_labels(loaders["test"][TASK])).tolist()[3::4]
    assert test_counts == [37, 36]  # the whole test split of classes 3 and 7 (issue 10 item 9)
    relabelled = image_dataset_loader(seed=1, dataset_cls="digits", filter_classes=[3, 7], relabel=True)
    assert set(all_labels(relabelled["test"][TASK]).tolist()) == {0, 1}
    assert relabelled["test"][TASK].dataset.num_classes == 2


def test_examples_per_class_limits_training_only_and_every_seed_gets_the_same_test_set(tmp_path):
    def test_pixels(**config):
        loaders = image_dataset_loader(dataset_cls="digits", **config)
        return [tuple(x.flatten().tolist()) for batch in unshuffled(loaders["test"][TASK]) for x in batch[0]]

    whole = test_pixels(seed=1)
    for seed in (1, 2, 3):
        assert test_pixels(seed=seed, examples_per_class=5) == whole
    limited = [test_pixels(seed=seed, examples_per_class=5, test_examples_per_class=4) for seed in (1, 2, 3)]
    assert len(limited[0]) == 40 and limited[0] == limited[1] == limited[2]
    assert set(limited[0]) <= set(whole)
    # corrupted test sets follow the same rule
    np.save(tmp_path / "fog.npy", np.random.RandomState(0).randint(0, 256, (50, 8, 8, 1), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(50) % 10)
    for seed in (1, 2):
        loaders = image_dataset_loader(seed=seed, dataset_cls="digits", examples_per_class=2,
                                       corrupted_test_dir=str(tmp_path))
        assert len(loaders["test"][f"{TASK}_fog"].dataset) == 50
    with pytest.raises(ConfigError, match="test_examples_per_class must be >= 1"):
        image_dataset_loader(seed=1, dataset_cls="digits", test_examples_per_class=0)


@pytest.mark.parametrize("in_memory", [False, True])
def test_validation_examples_per_class_is_drawn_first_and_the_budget_counts_training_examples(in_memory):
    from nntransfer.configs import ImageDatasetConfig

    def draw(budget, seed=1):
        loaders = image_dataset_loader(seed=seed, dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9],
                                       examples_per_class=budget, validation_examples_per_class=20, valid_size=0.0,
                                       in_memory=in_memory)
        found = {}
        for split in ("train", "validation"):
            loader = loaders[split][TASK]
            found[split] = (set(loader.dataset.example_indices.tolist()),
                            torch.bincount(all_labels(loader), minlength=10)[5:].tolist())
        return found

    three, ten, everything = draw(3), draw(10), draw(None)
    assert three["train"][1] == [3] * 5 and ten["train"][1] == [10] * 5  # the budget: training examples per class
    assert three["validation"][1] == ten["validation"][1] == everything["validation"][1] == [20] * 5
    # every budget of a seed is selected on the same validation examples, never trained on
    assert three["validation"][0] == ten["validation"][0] == everything["validation"][0]
    assert everything["train"][0].isdisjoint(everything["validation"][0])
    assert three["train"][0] < ten["train"][0] < everything["train"][0]  # nested budgets
    assert len(everything["train"][0]) + 100 == 145 + 145 + 143 + 139 + 144  # all of digits 5-9's training split
    assert draw(3, seed=2)["validation"][0] != three["validation"][0]  # another seed, another draw
    # the field is new: configs without it keep their keys; with it, a new key
    old = ImageDatasetConfig(dataset_cls="digits", examples_per_class=3)
    assert "validation_examples_per_class" not in old.hashed_dict()
    assert old.replace(validation_examples_per_class=20, valid_size=0.0).get_key() != \
        old.replace(valid_size=0.0).get_key()


def test_validation_examples_per_class_errors_say_what_to_change():
    from nntransfer.configs import ImageDatasetConfig

    with pytest.raises(ConfigError, match=r"valid_size=0.1 and validation_examples_per_class=20 both choose the "
                                          r"validation split: set valid_size=0"):
        ImageDatasetConfig(validation_examples_per_class=20)
    with pytest.raises(ConfigError, match="validation_examples_per_class must be >= 1"):
        ImageDatasetConfig(validation_examples_per_class=0, valid_size=0.0)
    with pytest.raises(ConfigError, match=r"class 5 has 145 training examples, too few to draw "
                                          r"validation_examples_per_class=145"):
        image_dataset_loader(seed=1, dataset_cls="digits", filter_classes=[5], validation_examples_per_class=145,
                             valid_size=0.0)


def test_extra_test_sets_rotated_and_corrupted(tmp_path):
    rng = np.random.RandomState(0)
    np.save(tmp_path / "gaussian_noise.npy", rng.randint(0, 256, (50, 8, 8, 1), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(50) % 10)
    loaders = image_dataset_loader(seed=1, dataset_cls="digits", test_rotations=[90], corrupted_test_dir=str(tmp_path),
                                   corruption_severity=2)
    assert set(loaders["test"]) == {TASK, f"{TASK}_rotated_90", f"{TASK}_gaussian_noise"}
    assert len(loaders["test"][f"{TASK}_gaussian_noise"].dataset) == 10  # severity 2 = second fifth
    plain = next(iter(unshuffled(loaders["test"][TASK])))[0]
    rotated = next(iter(unshuffled(loaders["test"][f"{TASK}_rotated_90"])))[0]
    torch.testing.assert_close(rotated, torch.rot90(plain, 1, dims=(2, 3)))


def epoch_samples(loader):
    return sorted((tuple(x.flatten().tolist()), int(y)) for batch in loader for x, y in zip(batch[0], batch[1]))


def test_in_memory_path_yields_the_same_samples_per_epoch():
    common = dict(seed=3, dataset_cls="digits", batch_size=50)
    standard = image_dataset_loader(**common)["train"][TASK]
    fast = image_dataset_loader(in_memory=True, **common)["train"][TASK]
    assert len(fast) == len(standard) and len(fast.dataset) == len(standard.dataset)
    a, b = epoch_samples(standard), epoch_samples(fast)
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert ya == yb and np.allclose(xa, xb, atol=1e-5)
    torch.manual_seed(0)
    first = [batch[1].tolist() for batch in fast]
    torch.manual_seed(1)
    assert first != [batch[1].tolist() for batch in fast]  # shuffled differently per epoch seed


def test_in_memory_augmentation_is_per_sample_and_keeps_shapes():
    from nntransfer.dataset import augment_batch

    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float).reshape(2, 1, 6, 6).repeat(32, 1, 1, 1)
    torch.manual_seed(0)
    out = augment_batch(x, padding=2, flip=True, rotation=0)
    assert out.shape == x.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 10  # different crops/flips per sample
    crop = augment_batch(x[:1], padding=0, flip=False)
    assert torch.equal(crop, x[:1])
    # every output is one window of the zero-padded image, possibly mirrored
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        candidates = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


@pytest.mark.parametrize("in_memory", [False, True])
def test_transfer_data_rows_follow_their_samples(in_memory):
    base = dict(seed=1, dataset_cls="digits", batch_size=40, in_memory=in_memory)
    canonical = torch.cat([b[0].flatten(1).sum(1) for b in unshuffled(image_dataset_loader(**base)["train"][TASK])])
    loaders = image_dataset_loader(transfer_data={"train": {"logits": canonical.numpy()[:, None]}},
                                   apply_augmentation=False, **base)
    seen = 0
    for x, _, extra in loaders["train"][TASK]:  # shuffled: rows must move with their samples
        torch.testing.assert_close(extra["logits"][:, 0], x.flatten(1).sum(1))
        seen += len(x)
    assert seen == len(canonical)
    with pytest.raises(ConfigError, match="has 3 rows but the training split has"):
        image_dataset_loader(transfer_data={"train": {"logits": np.zeros((3, 1))}}, **base)


@pytest.mark.parametrize("in_memory", [False, True])
def test_transfer_data_follows_samples_when_shuffled_and_augmented(in_memory):
    base = dict(seed=2, dataset_cls="digits", batch_size=32, in_memory=in_memory)
    canonical_labels = all_labels(image_dataset_loader(**base)["train"][TASK])
    index = np.arange(len(canonical_labels))  # row i = position of sample i in canonical order
    train = image_dataset_loader(transfer_data={"train": {"index": index}}, apply_augmentation=True, rotation=10,
                                 **base)["train"][TASK]
    seen = []
    for _, y, extra in train:
        assert torch.equal(canonical_labels[extra["index"]], y)
        seen += extra["index"].tolist()
    assert sorted(seen) == index.tolist() and seen != index.tolist()  # every row once, shuffled
    unshuffled_rows = torch.cat([extra["index"] for _, _, extra in unshuffled(train)])
    assert unshuffled_rows.tolist() == index.tolist()


def test_unshuffled_is_canonical_and_unaugmented_on_both_paths():
    base = dict(seed=4, dataset_cls="digits", batch_size=64, apply_augmentation=True, rotation=15)
    standard = image_dataset_loader(**base)["train"][TASK]
    fast = image_dataset_loader(in_memory=True, **base)["train"][TASK]
    first = torch.cat([x for x, _ in unshuffled(standard)])
    assert torch.equal(first, torch.cat([x for x, _ in unshuffled(standard)]))  # no randomness left
    torch.testing.assert_close(torch.cat([x for x, _ in unshuffled(fast)]), first, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat([y for _, y in unshuffled(fast)]), all_labels(standard))
    augmented = torch.cat([x for x, _ in standard])
    assert augmented.shape == first.shape and not torch.equal(augmented, first)


def test_in_memory_crops_pad_with_black_like_random_crop():
    base = dict(seed=1, dataset_cls="digits", in_memory=True, batch_size=64)
    canonical = torch.cat([x for x, _ in unshuffled(image_dataset_loader(**base)["train"][TASK])])
    index = np.arange(len(canonical))
    loader = image_dataset_loader(transfer_data={"train": {"index": index}}, apply_augmentation=True, crop_padding=3,
                                  **base)["train"][TASK]
    (mean,), (std,) = NORMALIZATION["digits"]
    black = (0 - mean) / std  # a 0 pixel normalised: what RandomCrop's zero padding becomes
    torch.manual_seed(0)
    x, _, extra = next(iter(loader))
    padded = torch.nn.functional.pad(canonical[extra["index"]], (3, 3, 3, 3), value=black)
    for out, source in zip(x, padded):
        windows = [source[:, dy:dy + 8, dx:dx + 8] for dy in range(7) for dx in range(7)]
        assert any(torch.allclose(out, w, atol=1e-5) or torch.allclose(out, w.flip(2), atol=1e-5) for w in windows)


def test_channel_conversion_resize_and_computed_normalisation(tmp_path, skip_md5):
    write_idx(tmp_path, "MNIST")
    write_cifar(tmp_path, 10)
    for in_memory in (False, True):
        rgb = image_dataset_loader(seed=1, dataset_cls="MNIST", data_dir=str(tmp_path), channels=3, input_width=16,
                                   input_height=12, in_memory=in_memory, batch_size=5)
        assert next(iter(rgb["test"][TASK]))[0].shape == (5, 3, 12, 16)
        gray = image_dataset_loader(seed=1, dataset_cls="CIFAR10", data_dir=str(tmp_path), channels=1,
                                    in_memory=in_memory, batch_size=5)
        assert next(iter(gray["test"][TASK]))[0].shape == (5, 1, 32, 32)
    computed = image_dataset_loader(seed=1, dataset_cls="CIFAR10", data_dir=str(tmp_path), normalization="computed",
                                    valid_size=0.0, batch_size=50)
    x = next(iter(computed["train"][TASK]))[0]
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    raw = image_dataset_loader(seed=1, dataset_cls="CIFAR10", data_dir=str(tmp_path), apply_normalization=False)
    x = next(iter(raw["test"][TASK]))[0]
    assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9


def test_image_folder_in_memory_matches_the_dataloader(tmp_path):
    write_image_folder(tmp_path)
    common = dict(seed=1, dataset_cls="ImageFolder", data_dir=str(tmp_path), valid_size=0.0, batch_size=7)
    standard = image_dataset_loader(**common)["test"][TASK]
    fast = image_dataset_loader(in_memory=True, **common)["test"][TASK]
    assert len(fast) == len(standard) == 3 and len(fast.dataset) == 18
    for (xa, ya), (xb, yb) in zip(standard, fast):
        torch.testing.assert_close(xa, xb, atol=1e-5, rtol=0)
        assert torch.equal(ya, yb)


def test_datasets_pickle_for_worker_processes():
    import pickle

    loaders = image_dataset_loader(seed=1, dataset_cls="digits", channels=3, apply_augmentation=True, rotation=5,
                                   test_rotations=[45])
    for loader in (loaders["train"][TASK], loaders["test"][f"{TASK}_rotated_45"]):
        copy = pickle.loads(pickle.dumps(loader.dataset))
        assert copy[0][0].shape == (3, 8, 8) and len(copy) == len(loader.dataset)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="corruption_severity must be 1..5"):
        image_dataset_loader(seed=1, corruption_severity=7)
    with pytest.raises(ConfigError, match="filter_classes must be a non-empty list"):
        image_dataset_loader(seed=1, filter_classes=[])
    with pytest.raises(ConfigError, match="no training examples left"):
        image_dataset_loader(seed=1, filter_classes=[42])
    with pytest.raises(ConfigError, match="has no field 'batchsize'; did you mean 'batch_size'"):
        image_dataset_loader(seed=1, batchsize=3)


def test_image_folder_in_tiny_imagenet_layout(tmp_path):
    rng = np.random.RandomState(0)
    wnids = ["n01443537", "n01629819"]
    for wnid in wnids:
        (tmp_path / "train" / wnid / "images").mkdir(parents=True)
        (tmp_path / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # not an image: ignored
        for i in range(4):
            Image.fromarray(rng.randint(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(5):
        image = Image.fromarray(rng.randint(0, 256, (8, 8, 3), dtype=np.uint8))
        image.save(tmp_path / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t8\t8")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    loaders = image_dataset_loader(seed=1, dataset_cls="ImageFolder", data_dir=str(tmp_path), valid_size=0.25)
    assert sizes(loaders) == {"train": {TASK: 6}, "validation": {TASK: 2}, "test": {TASK: 5}}
    assert all_labels(loaders["test"][TASK]).tolist() == [0, 1, 0, 1, 0]


def test_digits_default_normalisation_fits_its_training_split():
    x = torch.cat([b[0] for b in unshuffled(image_dataset_loader(seed=1, dataset_cls="digits", valid_size=0.0,
                                                                 batch_size=500)["train"][TASK])])
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_worker_processes_yield_the_same_samples():
    common = dict(seed=5, dataset_cls="digits", batch_size=100, filter_classes=[1, 2], valid_size=0.0)
    workers = image_dataset_loader(num_workers=2, **common)["train"][TASK]
    assert workers.num_workers == 2
    assert epoch_samples(workers) == epoch_samples(image_dataset_loader(**common)["train"][TASK])


def test_in_memory_device_errors_say_what_to_set():
    with pytest.raises(ConfigError, match="not a torch device"):
        image_dataset_loader(seed=1, in_memory=True, device="gpu0")
    with pytest.raises(ConfigError, match=r"device='cuda:99' but this machine has \d+ CUDA device"):
        image_dataset_loader(seed=1, in_memory=True, device="cuda:99")


def test_in_memory_rotation_moves_pixels_without_blending():
    from nntransfer.dataset import random_rotation

    torch.manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 9, 9)).float()
    out = random_rotation(x, 180)
    assert out.shape == x.shape and not torch.equal(out, x)
    for o, source in zip(out, x):  # nearest pixel, black corners: like RandomRotation on PIL images
        assert set(o.unique().tolist()) <= set(source.unique().tolist()) | {0.0}
    assert torch.equal(out[:, :, 4, 4], x[:, :, 4, 4])  # the centre stays put
