"""Neural responses to images: neuralpredictors' ``FileTreeDataset`` sessions, and simulated neurons to fill them.

A session is a directory in neuralpredictors' file-tree layout (one ``.npy`` file per trial)::

    <session>/
        config.json                      {"links": {}} (+ "simulation": parameters, for simulated data)
        data/images/<trial>.npy          [C, H, W]
        data/responses/<trial>.npy       [neurons]
        data/behavior/<trial>.npy        [3]   optional (pupil dilation, its derivative, running speed)
        data/pupil_center/<trial>.npy    [2]   optional
        meta/trials/tiers.npy            "train" | "validation" | "test" per trial (+ trial_idx, image_ids)
        meta/neurons/*.npy               one value per neuron (unit_ids, animal_ids, sessions, ...)
        meta/statistics/<key>/all/{mean,std,min,max,median}.npy

``neural_dataset_loader`` (the fn of ``NeuralDatasetConfig``) gives one task key per session and batches
``(images, responses)`` or ``(images, responses, {"behavior": ..., "pupil_center": ...})``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from ..configs.neural import NeuralDatasetConfig
from .image_loader import ImageDataset, split
from .in_memory import _device
from .sources import load_source

TIERS = ("train", "validation", "test")


# -- reading a session ------------------------------------------------------------------------------
def open_session(path: str | os.PathLike, data_keys: tuple[str, ...], normalize: bool = True,
                 exclude: tuple[str, ...] = ()):
    """neuralpredictors' ``FileTreeDataset`` of ``path`` with ``NeuroNormalizer`` (unless ``normalize=False``)."""
    from ..core import compat  # noqa: F401  (collections aliases neuralpredictors imports)
    from neuralpredictors.data.datasets import FileTreeDataset
    from neuralpredictors.data.transforms import NeuroNormalizer

    path = Path(path)
    missing = [key for key in data_keys if not (path / "data" / key).is_dir()]
    if not path.is_dir() or missing:
        what = f"has no data/{missing[0]}" if path.is_dir() else "does not exist"
        raise ConfigError(f"session {path.resolve()} {what}: a session is a FileTreeDataset directory "
                          "(data/images, data/responses, meta/trials/tiers.npy, ...); write one with "
                          "nntransfer.dataset.simulate_neurons, or point data_dir/sessions at yours")
    if not (path / "meta" / "trials" / "tiers.npy").exists():
        raise ConfigError(f"session {path.resolve()} has no meta/trials/tiers.npy (train/validation/test per trial)")
    data = FileTreeDataset(str(path), *data_keys)
    if normalize:
        # NeuroNormalizer reads the statistics of every data key, excluded ones too
        absent = [key for key in data_keys if not (path / "meta" / "statistics" / key / "all" / "std.npy").exists()]
        if absent:
            raise ConfigError(f"session {path.resolve()} has no meta/statistics/{absent[0]}/all/(mean|std).npy, "
                              "which normalisation needs; add them or set normalize=False")
        data.transforms.append(NeuroNormalizer(data, exclude=list(exclude)))
    return data


class NeuralSplit(Dataset):
    """One tier of one session: item ``i`` is ``(images [C, H, W], responses [neurons])`` as float tensors, plus
    ``{"behavior": ..., "pupil_center": ...}`` when those are read; normalised by neuralpredictors' NeuroNormalizer.

    The FileTreeDataset is opened lazily in each process (its NeuroNormalizer does not pickle), so DataLoader
    workers work with any start method. ``arrays()`` loads the whole split once (the in-memory path).
    """

    def __init__(self, path: str | os.PathLike, data_keys: tuple[str, ...], indices: np.ndarray, session: str,
                 normalize: bool = True, exclude: tuple[str, ...] = (), data=None):
        self.path, self.data_keys, self.indices, self.session = Path(path), tuple(data_keys), indices, session
        self.normalize, self.exclude = normalize, tuple(exclude)
        self._data = data  # the session's open_session(...), if this process has it already
        self._arrays: dict[str, np.ndarray] = {}

    def _dataset(self):
        if self._data is None:
            self._data = open_session(self.path, self.data_keys, self.normalize, self.exclude)
        return self._data

    def __getstate__(self):  # DataLoader workers read their items from the files
        return {**self.__dict__, "_data": None, "_arrays": {}}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        point = self._dataset()[int(self.indices[i])]
        values = [torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in point]
        item = (values[0], values[1])
        if len(values) > 2:
            return item + (dict(zip(self.data_keys[2:], values[2:])),)
        return item

    def arrays(self, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Data keys of the split (default: all) as one float32 array each, loaded once, then kept."""
        keys = self.data_keys if keys is None else tuple(keys)
        missing = tuple(key for key in keys if key not in self._arrays)
        if missing:
            # the files of each key stacked, then the dataset's transforms once on the stack (NeuroNormalizer is
            # elementwise and keyed by field name): the same values as item by item, without per-item overhead
            data = self._dataset()
            folders = [data.resolve_data_path(key) for key in missing]
            point = namedtuple("Split", missing)(*(np.stack([np.load(folder / f"{int(i)}.npy") for i in self.indices])
                                                   for folder in folders))
            for transform in data.transforms:
                point = transform(point)
            self._arrays.update((key, np.asarray(value, dtype=np.float32)) for key, value in zip(missing, point))
        return {key: self._arrays[key] for key in keys}

    @property
    def n_neurons(self) -> int:
        return int(self._dataset().n_neurons)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.shape(self._dataset()[0].images))

    def mean_responses(self) -> np.ndarray:
        """Mean (normalised) response per neuron over this split."""
        return self.arrays(("responses",))["responses"].mean(axis=0)


class TensorBatches:
    """The in-memory path: a split as tensors on one device, batched by index.

    Shuffling draws a permutation from torch's global RNG (seeded per epoch by the trainer), like
    ``DataLoader(shuffle=True)``. ``dataset`` is the :class:`NeuralSplit` the tensors came from.
    """

    def __init__(self, dataset: NeuralSplit, batch_size: int, shuffle: bool, device: torch.device):
        arrays = dataset.arrays()
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.tensors = {key: torch.as_tensor(value).to(device) for key, value in arrays.items()}
        self.extra_keys = dataset.data_keys[2:]
        self._n = len(dataset)

    def __len__(self) -> int:
        return -(-self._n // self.batch_size)

    def __iter__(self):
        device = self.tensors["images"].device
        order = torch.randperm(self._n).to(device) if self.shuffle else torch.arange(self._n, device=device)
        for start in range(0, self._n, self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = (self.tensors["images"][idx], self.tensors["responses"][idx])
            if self.extra_keys:
                batch += ({key: self.tensors[key][idx] for key in self.extra_keys},)
            yield batch


# -- the loader function ------------------------------------------------------------------------------
def neural_dataset_loader(seed: int, transfer_data: dict | None = None, **config) -> dict:
    """nnfabrik dataset function: ``{"train": {session: loader}, "validation": {...}, "test": {...}}``.

    ``config`` holds the fields of :class:`~nntransfer.configs.NeuralDatasetConfig`. The tiers in
    ``meta/trials/tiers.npy`` make the splits (``valid_size > 0`` draws validation from the train tier instead).
    """
    config.pop("comment", None)
    cfg = NeuralDatasetConfig(**config)
    if transfer_data:
        raise ConfigError("neural_dataset_loader does not take transfer data; set data_transfer=False on the "
                          "step before this one")
    keys = ("images", "responses") + (("behavior", "pupil_center") if cfg.include_behavior else ())
    exclude = tuple(cfg.exclude_from_normalization)
    device = _device(cfg.device) if cfg.in_memory else None
    loaders: dict = {tier: {} for tier in TIERS}
    for session in cfg.sessions:
        path = Path(cfg.data_dir) / session
        data = open_session(path, keys, cfg.normalize, exclude)
        for tier, indices in _tier_indices(data.trial_info.tiers, cfg.valid_size, seed, path).items():
            if not len(indices):  # e.g. a session without test trials: no test loader for it
                continue
            dataset = NeuralSplit(path, keys, indices, session, cfg.normalize, exclude, data=data)
            train = tier == "train"
            if cfg.in_memory:
                loaders[tier][session] = TensorBatches(dataset, cfg.batch_size, train and cfg.shuffle, device)
            else:
                loaders[tier][session] = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=train and cfg.shuffle,
                                                    num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
    return loaders


def _tier_indices(tiers: np.ndarray, valid_size: float, seed: int, path: Path) -> dict[str, np.ndarray]:
    tiers = np.asarray(tiers).astype(str)
    indices = {tier: np.flatnonzero(tiers == tier) for tier in TIERS}
    if len(indices["train"]) == 0:
        raise ConfigError(f"session {path.resolve()} has no trials in the 'train' tier "
                          f"(meta/trials/tiers.npy has {sorted(set(tiers))})")
    if valid_size > 0:
        indices["train"], indices["validation"] = split(indices["train"], valid_size, seed)
    elif len(indices["validation"]) == 0:
        raise ConfigError(f"session {path.resolve()} has no 'validation' tier; set valid_size > 0 to draw "
                          "validation trials from the train tier")
    return indices


# -- simulated neurons ----------------------------------------------------------------------------------
def simulate_neurons(path: str | os.PathLike, *, source: str = "digits", n_neurons: int = 40, image_size: int = 16,
                     seed: int = 0, valid_fraction: float = 0.2, mean_rate: float = 2.0, gain: float = 0.8,
                     complex_fraction: float = 0.5, behavior: bool = False, data_dir: str = "./data",
                     overwrite: bool = False) -> Path:
    """Write a FileTreeDataset session of simulated V1-like neurons responding to ``source``'s images.

    Images: the image source's (``digits`` by default: offline) training and test images, in grayscale,
    resized to ``image_size`` × ``image_size`` exactly as ``ImageDatasetConfig(input_width=..., input_height=...,
    channels=1)`` resizes them. Tiers: the source's test images are the ``test`` tier; ``valid_fraction`` of its
    training images (seeded) the ``validation`` tier, the rest ``train``.

    Neurons: localised, oriented Gabor receptive fields (random position, orientation, wavelength and phase);
    ``1 - complex_fraction`` are simple cells (linear filter), the rest complex cells (energy of a quadrature
    pair). The drive, z-scored per neuron, sets a rate ``∝ exp(gain * drive)`` with mean ``mean_rate`` on the
    training images; responses are Poisson counts. With ``behavior=True`` the session also has behaviour and
    pupil-centre signals, and running speed scales the rates.

    Deterministic for ``seed``. An existing session with the same parameters is kept as it is (several processes
    may call this at once); one with other parameters raises ``FileExistsError`` unless ``overwrite=True``.
    Returns ``path``. The true receptive fields are in ``meta/neurons``, the correlation between true rates and
    responses on the test tier (the best any model can reach) in ``config.json`` (``simulation``).
    """
    path = Path(path)
    params = {"source": source, "n_neurons": int(n_neurons), "image_size": int(image_size), "seed": int(seed),
              "valid_fraction": float(valid_fraction), "mean_rate": float(mean_rate), "gain": float(gain),
              "complex_fraction": float(complex_fraction), "behavior": bool(behavior)}
    if n_neurons < 1 or image_size < 4 or not 0 <= valid_fraction < 1 or mean_rate <= 0 or not 0 <= complex_fraction <= 1:
        raise ValueError(f"simulate_neurons: need n_neurons >= 1, image_size >= 4, 0 <= valid_fraction < 1, "
                         f"mean_rate > 0, 0 <= complex_fraction <= 1; got {params}")
    if path.exists():
        if overwrite:
            shutil.rmtree(path)
        elif _same_simulation(path, params):
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _write_simulation(tmp, params, data_dir)
        (tmp / "config.json").write_text(json.dumps({"links": {}, "simulation": {**params, **summary}}, indent=1))
        os.rename(tmp, path)  # atomic: readers see no session or a whole one
    except OSError:
        if not path.exists():
            raise
        _same_simulation(path, params)  # another process finished first; raises if it wrote something else
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _same_simulation(path: Path, params: dict) -> bool:
    try:
        stored = json.loads((path / "config.json").read_text()).get("simulation")
    except (OSError, ValueError):
        stored = None
    if stored is None:
        raise FileExistsError(f"{path} exists and is not a simulate_neurons session; choose another path")
    stored = {k: stored.get(k) for k in params}
    if stored != params:
        changed = {k: (stored[k], params[k]) for k in params if stored[k] != params[k]}
        raise FileExistsError(f"{path} holds a simulation with other parameters {changed} (stored, requested); "
                              "choose another path or pass overwrite=True")
    return True


def _write_simulation(root: Path, params: dict, data_dir: str) -> dict:
    rng = np.random.default_rng(params["seed"])
    size = params["image_size"]
    train_images, test_images = _grayscale_images(params["source"], data_dir, size)
    images = np.concatenate([train_images, test_images])  # uint8 [N, 1, H, W]
    n_train, n = len(train_images), len(images)
    tiers = np.array(["train"] * n_train + ["test"] * len(test_images), dtype="<U10")
    tiers[rng.permutation(n_train)[:int(round(params["valid_fraction"] * n_train))]] = "validation"

    fields, meta = _receptive_fields(rng, params["n_neurons"], size, params["complex_fraction"])
    pixels = images[:, 0].reshape(n, -1).astype(np.float64) / 255
    pixels = (pixels - pixels[tiers == "train"].mean()) / pixels[tiers == "train"].std()
    even, odd = pixels @ fields[0].T, pixels @ fields[1].T  # [N, neurons]: quadrature pair
    drive = np.where(meta["complex"], np.sqrt(even ** 2 + odd ** 2), even)
    train = tiers == "train"
    drive = (drive - drive[train].mean(0)) / drive[train].std(0)
    log_rate = params["gain"] * drive
    signals = {}
    if params["behavior"]:
        running = rng.gamma(2.0, 1.0, n)
        pupil = rng.normal(0, 1, n).cumsum() * 0.05 + 3.0
        signals = {"behavior": np.stack([pupil, np.gradient(pupil), running], 1),
                   "pupil_center": rng.normal(0, 1, (n, 2))}
        log_rate = log_rate + 0.3 * ((running - running.mean()) / running.std())[:, None]
    rates = np.exp(log_rate)
    rates *= params["mean_rate"] / rates[train].mean(0)
    responses = rng.poisson(rates)
    test = tiers == "test"
    ceiling = float(np.mean([np.corrcoef(rates[test, j], responses[test, j])[0, 1] for j in range(rates.shape[1])]))

    arrays = {"images": images, "responses": responses.astype(np.float32),
              **{k: v.astype(np.float32) for k, v in signals.items()}}
    for key, values in arrays.items():
        folder = root / "data" / key
        folder.mkdir(parents=True)
        for trial, value in enumerate(values):
            np.save(folder / f"{trial}.npy", value)
        _save_statistics(root / "meta" / "statistics" / key / "all", values, per_pixel=key == "images")
    _save_all(root / "meta" / "trials", {"tiers": tiers, "trial_idx": np.arange(n),
                                          "image_ids": np.concatenate([np.arange(n_train), np.arange(len(test_images))])})
    n_neurons = params["n_neurons"]
    _save_all(root / "meta" / "neurons", {
        "unit_ids": np.arange(1, n_neurons + 1), "animal_ids": np.zeros(n_neurons, int),
        "sessions": np.full(n_neurons, params["seed"]), "scan_idx": np.zeros(n_neurons, int),
        "area": np.array(["V1"] * n_neurons), "layer": np.array(["L2/3"] * n_neurons),
        **{f"rf_{k}": v for k, v in meta.items()}})
    return {"trials": {tier: int((tiers == tier).sum()) for tier in TIERS}, "test_ceiling_correlation": ceiling}


def _grayscale_images(source: str, data_dir: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The source's train and test images as uint8 ``[N, 1, size, size]`` (the image loader's PIL steps)."""
    from torchvision import transforms as T

    data = load_source(source, data_dir, download=False)
    out = []
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        channels = images.shape[-1] if isinstance(images, np.ndarray) else 3
        prepare = ([T.Grayscale(1)] if channels != 1 else []) + [T.Resize((size, size))]
        out.append(ImageDataset(images, labels, data.num_classes, prepare, [], None, None).pixels().numpy())
    return out[0], out[1]


def _receptive_fields(rng, n: int, size: int, complex_fraction: float) -> tuple[np.ndarray, dict]:
    """Unit-norm Gabor quadrature pairs ``[2, n, size * size]`` and their parameters per neuron."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    meta = {"x": rng.uniform(0.3, 0.7, n) * (size - 1), "y": rng.uniform(0.3, 0.7, n) * (size - 1),
            "orientation": rng.uniform(0, np.pi, n), "wavelength": rng.uniform(0.3, 0.5, n) * size,
            "phase": rng.uniform(0, 2 * np.pi, n), "complex": rng.random(n) < complex_fraction}
    pairs = []
    for shift in (0.0, np.pi / 2):
        fields = []
        for j in range(n):
            dx, dy = xx - meta["x"][j], yy - meta["y"][j]
            along = dx * np.cos(meta["orientation"][j]) + dy * np.sin(meta["orientation"][j])
            across = -dx * np.sin(meta["orientation"][j]) + dy * np.cos(meta["orientation"][j])
            sigma = 0.4 * meta["wavelength"][j]
            gabor = np.exp(-(along ** 2 + across ** 2) / (2 * sigma ** 2)) * np.cos(
                2 * np.pi * along / meta["wavelength"][j] + meta["phase"][j] + shift)
            gabor -= gabor.mean()
            fields.append((gabor / np.linalg.norm(gabor)).ravel())
        pairs.append(np.stack(fields))
    return np.stack(pairs), meta


def _save_statistics(folder: Path, values: np.ndarray, per_pixel: bool) -> None:
    """mean/std/min/max/median over all trials: one number for images, one per entry otherwise."""
    values = values.astype(np.float64)
    axis = None if per_pixel else 0
    _save_all(folder, {name: np.asarray(fn(values, axis=axis), dtype=np.float32) for name, fn in
                       (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max), ("median", np.median))})


def _save_all(folder: Path, arrays: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", np.asarray(value))


__all__ = ["NeuralSplit", "TensorBatches", "neural_dataset_loader", "open_session", "simulate_neurons"]
