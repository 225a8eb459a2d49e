"""Offline binary-classification datasets for QNN classifiers.

Three sources, none of which downloads anything:

* ``iris``: scikit-learn's bundled Iris data (4 features, classes 0-2);
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (64 features, classes 0-9), the
  embedded MNIST-like default;
* ``mnist``: real MNIST read from a local directory of IDX files or a keras-layout ``.npz``.

Two classes are kept and relabelled 0 and 1. Every transform is fitted on the training split
only and then applied to both splits: optional PCA down to ``features`` components, then
standardization, then an affine map that sends the training range of each feature onto
[0, pi] for angle encoding.
"""

from __future__ import annotations

import gzip
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from hpcqnn.errors import DataError

#: name -> (classes, raw features per example)
DATASETS = {"iris": (3, 4), "digits": (10, 64), "mnist": (10, 784)}
MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Prepared train/test splits with labels in {0, 1} and the angle-encoding map.

    ``angles(x) = (x - angle_offset) * angle_scale`` maps the training range of each feature
    onto [0, pi]. All arrays are read-only.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    angle_offset: np.ndarray
    angle_scale: np.ndarray
    description: str

    def __post_init__(self) -> None:
        for value in (self.x_train, self.y_train, self.x_test, self.y_test, self.angle_offset, self.angle_scale):
            value.setflags(write=False)

    @property
    def features(self) -> int:
        """Number of features per example."""
        return self.x_train.shape[1]

    def angles(self, x: np.ndarray) -> np.ndarray:
        """Encoding angles of prepared examples ``x`` (``[..., features]``); no clipping."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[-1] != self.features:
            raise DataError(
                f"angles() needs examples with {self.features} features in the last axis, got shape {x.shape}"
            )
        return (x - self.angle_offset) * self.angle_scale


def load_dataset(
    name: str,
    classes: Sequence[int],
    features: int,
    test_fraction: float,
    seed: int,
    path: str | None = None,
    max_train: int = 0,
) -> Dataset:
    """Load a binary-classification dataset, reduced, standardized and ready for angle encoding.

    ``name`` is one of ``iris``, ``digits`` or ``mnist``. ``classes[0]`` becomes label 0 and
    ``classes[1]`` label 1. ``features`` below the raw feature count applies PCA fitted on the
    training split; equal to it keeps the raw features. Iris and digits are split with a
    stratified split seeded by ``seed`` that holds out ``test_fraction`` of the examples. MNIST
    keeps its own train/test split, so ``test_fraction`` is ignored for it; ``path`` is then a
    directory holding the four IDX files (each optionally ``.gz``) or a ``.npz`` file with
    ``x_train, y_train, x_test, y_test``. ``max_train > 0`` keeps a seeded stratified subsample
    of at most that many training examples.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(max_train, bool) or not isinstance(max_train, numbers.Integral) or max_train < 0:
        raise DataError(f"max_train must be a non-negative integer (0 keeps every training example), got {max_train!r}")
    if max_train == 1:
        raise DataError("max_train=1 cannot hold one example of each class; use 0 (all) or at least 2")

    if name == "mnist":
        x_train, y_train, x_test, y_test = _load_mnist(path)
        pair = _check_classes(classes, np.concatenate([y_train, y_test]), name)
        x_train, y_train = _select(x_train, y_train, pair)
        x_test, y_test = _select(x_test, y_test, pair)
        for split, labels in (("training", y_train), ("test", y_test)):
            for label, digit in enumerate(pair):
                if not np.any(labels == label):
                    raise DataError(
                        f"mnist: the {split} split holds no example of class {digit}; each class needs at least one"
                    )
        class_names = [str(digit) for digit in pair]
    else:
        bunch = load_iris() if name == "iris" else load_digits()
        pair = _check_classes(classes, bunch.target, name)
        x, y = _select(bunch.data, bunch.target, pair)
        x_train, x_test, y_train, y_test = _stratified_split(x, y, test_fraction, seed, name)
        class_names = [str(bunch.target_names[c]) for c in pair]

    if 0 < max_train < len(y_train):
        keep = _stratified_subsample(y_train, max_train, seed)
        x_train, y_train = x_train[keep], y_train[keep]

    raw_features = x_train.shape[1]
    _check_features(features, raw_features, len(y_train), name)
    x_train, x_test, reduction = _reduce(x_train, x_test, features, seed)

    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)

    low, high = x_train.min(axis=0), x_train.max(axis=0)
    span = high - low
    # A feature constant on the training split carries no information: encode it as angle 0.
    scale = np.divide(np.pi, span, out=np.zeros_like(span), where=span > 0)

    description = (
        f"{name}: {class_names[0]} (0) vs {class_names[1]} (1), {features} features{reduction}, "
        f"{len(y_train)} train / {len(y_test)} test"
    )
    return Dataset(
        x_train=np.ascontiguousarray(x_train, dtype=np.float64),
        y_train=y_train,
        x_test=np.ascontiguousarray(x_test, dtype=np.float64),
        y_test=y_test,
        angle_offset=low,
        angle_scale=scale,
        description=description,
    )


def _check_classes(classes: Sequence[int], labels: np.ndarray, name: str) -> tuple[int, int]:
    """Validate that ``classes`` names two distinct labels present in ``labels``."""
    available = sorted(int(v) for v in np.unique(labels))
    expected = f"two distinct labels from {available}"
    try:
        pair = tuple(classes)
    except TypeError:
        raise DataError(f"{name}: classes must be {expected}, got {classes!r}") from None
    if len(pair) != 2 or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in pair):
        raise DataError(f"{name}: classes must be {expected}, got {classes!r}")
    if pair[0] == pair[1]:
        raise DataError(f"{name}: classes must be {expected}, got the same label twice: {classes!r}")
    missing = [int(c) for c in pair if int(c) not in available]
    if missing:
        raise DataError(f"{name}: class {missing[0]} is not in the data; classes must be {expected}")
    return int(pair[0]), int(pair[1])


def _select(x: np.ndarray, y: np.ndarray, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the examples of the two classes, flattened to float64, relabelled 0 and 1."""
    mask = (y == pair[0]) | (y == pair[1])
    x_kept = np.asarray(x[mask], dtype=np.float64).reshape(int(mask.sum()), -1)
    return x_kept, (y[mask] == pair[1]).astype(np.int64)


def _stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified train/test split holding out ``test_fraction`` of the examples."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    total = len(y)
    n_test = math.ceil(test_fraction * total)
    if n_test < 2 or total - n_test < 2:
        raise DataError(
            f"{name}: test_fraction={test_fraction} splits {total} examples into "
            f"{total - n_test} train / {n_test} test; "
            "a stratified split needs at least one example of each class (2) on each side"
        )
    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=seed)


def _stratified_subsample(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of ``size`` examples with ``y``'s class ratios."""
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y)
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.argsort(take - quota, kind="stable")
    take[by_remainder[: size - int(take.sum())]] += 1
    # Keep at least one example of each class, paid for by the largest class.
    take = np.maximum(take, 1)
    take[np.argmax(take)] -= int(take.sum()) - size
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == label), n, replace=False) for label, n in zip(labels, take)]
    return np.sort(np.concatenate(chosen))


def _check_features(features: int, raw_features: int, n_train: int, name: str) -> None:
    """Validate the requested width against the raw width and, for PCA, the training size."""
    if isinstance(features, bool) or not isinstance(features, numbers.Integral) or not 1 <= features <= raw_features:
        raise DataError(
            f"{name}: features must be an integer from 1 to {raw_features} (the raw feature count), got {features!r}"
        )
    if features < raw_features and features > n_train:
        raise DataError(
            f"{name}: PCA to {features} components needs at least {features} training examples, got {n_train}; "
            "lower features or raise max_train"
        )


def _reduce(x_train: np.ndarray, x_test: np.ndarray, features: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """PCA fitted on the training split when ``features`` is below the raw width."""
    raw_features = x_train.shape[1]
    if features == raw_features:
        return x_train, x_test, ""
    pca = PCA(n_components=features, random_state=seed).fit(x_train)
    return pca.transform(x_train), pca.transform(x_test), f" (PCA of {raw_features})"


def _load_mnist(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read MNIST from a directory of IDX files or a keras-layout ``.npz``."""
    if path is None:
        raise DataError(
            "mnist needs path: a directory with the four MNIST IDX files (optionally .gz) "
            "or an .npz with x_train, y_train, x_test, y_test; nothing is downloaded"
        )
    source = Path(path)
    if not source.exists():
        raise DataError(
            f"data.path {str(source)!r} (the MNIST files) does not exist; expected an IDX directory or an .npz file"
        )
    if source.is_dir():
        arrays = {key: _read_idx(_find_idx(source, stem), key) for key, stem in MNIST_FILES.items()}
    elif source.suffix == ".npz":
        arrays = _read_npz(source)
    else:
        raise DataError(
            f"data.path {str(source)!r} (the MNIST files) is neither a directory of IDX files nor an .npz file"
        )
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"mnist {split} split: x_{split} must be [n, ...] and y_{split} [n], "
                f"got shapes {images.shape} and {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"mnist {split} split: y_{split} must hold integer labels, got dtype {labels.dtype}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"mnist: train images have shape {arrays['x_train'].shape[1:]} but test images {arrays['x_test'].shape[1:]}"
        )
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def _find_idx(directory: Path, stem: str) -> Path:
    """The IDX file ``stem`` or ``stem.gz`` in ``directory``."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"mnist directory {str(directory)!r} lacks {stem} (or {stem}.gz); "
        f"expected all of {', '.join(MNIST_FILES.values())}"
    )


def _read_idx(file: Path, key: str) -> np.ndarray:
    """Parse one unsigned-byte IDX file (images: 3 dimensions, labels: 1), checking magic and size."""
    kind = "images" if key.startswith("x") else "labels"
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{file}: cannot read ({exc})") from exc
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[kind]:
        raise DataError(
            f"{file}: IDX magic number {magic:#010x} is not {_IDX_MAGIC[kind]:#010x} (unsigned-byte {kind})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{file}: truncated IDX header; expected {ndim} big-endian dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != math.prod(shape):
        raise DataError(
            f"{file}: IDX header declares shape {shape} ({math.prod(shape)} bytes) "
            f"but holds {len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays of a keras-layout ``.npz``."""
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot read as .npz ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file}: holds a single array, not an .npz archive with {', '.join(MNIST_FILES)}")
    with archive:
        missing = [key for key in MNIST_FILES if key not in archive.files]
        if missing:
            raise DataError(f"{file}: .npz lacks {', '.join(missing)}; expected arrays {', '.join(MNIST_FILES)}")
        return {key: archive[key] for key in MNIST_FILES}
