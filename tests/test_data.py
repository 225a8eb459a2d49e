"""Offline datasets: splits, train-only transforms, angle encoding, MNIST readers and errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

from hpcqnn.errors import HpcqnnError
from hpcqnn.training.data import MNIST_FILES, DataError, Dataset, load_dataset
from tolerances import ROUNDING_TOL


def _mnist_arrays(seed: int = 0, n_train: int = 40, n_test: int = 20) -> dict[str, np.ndarray]:
    """Tiny MNIST-shaped data: random 28x28 uint8 images, labels cycling through 0-9."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def _write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> Path:
    directory.mkdir()
    for key, stem in MNIST_FILES.items():
        data = _idx_bytes(arrays[key])
        if compress:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return directory


def _write_npz(file: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(file, **arrays)
    return file


def _assert_same(a: Dataset, b: Dataset) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test", "angle_offset", "angle_scale"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.description == b.description


def test_iris_shapes_labels_and_description() -> None:
    data = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=0)
    assert data.x_train.shape == (80, 4) and data.x_test.shape == (20, 4)
    assert data.x_train.dtype == np.float64 and data.y_train.dtype == np.int64
    assert set(data.y_train) == {0, 1} and set(data.y_test) == {0, 1}
    assert data.angle_offset.shape == data.angle_scale.shape == (4,)
    assert data.description == "iris: versicolor (0) vs virginica (1), 4 features, 80 train / 20 test"


def test_classes_order_sets_labels() -> None:
    def petal_gap(data: Dataset) -> float:
        # Column 2 is petal length, longer for virginica (iris class 2) than for versicolor (1).
        return data.x_train[data.y_train == 1, 2].mean() - data.x_train[data.y_train == 0, 2].mean()

    forward = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=0)
    backward = load_dataset("iris", classes=[2, 1], features=4, test_fraction=0.2, seed=0)
    assert petal_gap(forward) > 1.0 and petal_gap(backward) < -1.0
    assert backward.description.startswith("iris: virginica (0) vs versicolor (1)")


def test_digits_pca_shapes_and_stratification() -> None:
    data = load_dataset("digits", classes=[3, 5], features=8, test_fraction=0.25, seed=1)
    assert data.x_train.shape[1] == data.x_test.shape[1] == 8
    assert set(data.y_train) == {0, 1} and set(data.y_test) == {0, 1}
    assert "(PCA of 64)" in data.description
    total = len(data.y_train) + len(data.y_test)
    assert total == 183 + 182  # every 3 and 5 of the bundled digits
    assert len(data.y_test) == int(np.ceil(0.25 * total))
    for labels in (data.y_train, data.y_test):
        # Stratified: each split holds the overall share of class 1 to within one example.
        assert abs(labels.sum() - len(labels) * 182 / total) <= 1


def test_iris_stratification_is_exact() -> None:
    data = load_dataset("iris", classes=[0, 1], features=4, test_fraction=0.3, seed=4)
    assert np.bincount(data.y_train).tolist() == [35, 35]
    assert np.bincount(data.y_test).tolist() == [15, 15]


@pytest.mark.parametrize("features", [1, 3, 8, 20])
def test_pca_reduces_to_requested_width(features: int) -> None:
    data = load_dataset("digits", classes=[0, 1], features=features, test_fraction=0.2, seed=0)
    assert data.x_train.shape[1] == data.x_test.shape[1] == features
    assert data.angles(data.x_test).shape == data.x_test.shape


def test_full_width_skips_pca() -> None:
    data = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=0)
    assert "PCA" not in data.description
    # Without PCA each column is the raw feature standardized with the training mean and std.
    iris = load_iris()
    mask = np.isin(iris.target, [1, 2])
    x_train, x_test = train_test_split(iris.data[mask], test_size=20, stratify=iris.target[mask], random_state=0)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    np.testing.assert_allclose(data.x_train, (x_train - mean) / std, atol=ROUNDING_TOL)
    np.testing.assert_allclose(data.x_test, (x_test - mean) / std, atol=ROUNDING_TOL)


@pytest.mark.parametrize(("name", "classes", "features"), [("iris", [1, 2], 4), ("digits", [3, 5], 8)])
def test_train_split_standardized_test_split_not_forced(name: str, classes: list[int], features: int) -> None:
    data = load_dataset(name, classes=classes, features=features, test_fraction=0.3, seed=2)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=ROUNDING_TOL)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, rtol=ROUNDING_TOL)
    # The test split goes through the train-fitted transforms, so its moments are close but not exact.
    assert not np.allclose(data.x_test.mean(axis=0), 0.0, atol=1e-6)
    assert not np.allclose(data.x_test.std(axis=0), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("name", "classes", "features"), [("iris", [1, 2], 4), ("digits", [3, 5], 8)])
def test_train_angles_span_zero_to_pi(name: str, classes: list[int], features: int) -> None:
    data = load_dataset(name, classes=classes, features=features, test_fraction=0.2, seed=0)
    angles = data.angles(data.x_train)
    np.testing.assert_allclose(angles.min(axis=0), 0.0, atol=ROUNDING_TOL)
    np.testing.assert_allclose(angles.max(axis=0), np.pi, rtol=ROUNDING_TOL)
    assert np.all(angles >= -ROUNDING_TOL) and np.all(angles <= np.pi + ROUNDING_TOL)
    np.testing.assert_array_equal(angles, (data.x_train - data.angle_offset) * data.angle_scale)


def test_angles_do_not_clip() -> None:
    data = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=0)
    beyond = data.x_train.max(axis=0) + 1.0
    assert np.all(data.angles(beyond) > np.pi)
    assert np.all(data.angles(data.x_train.min(axis=0) - 1.0) < 0)
    assert data.angles(data.x_train[0]).shape == (4,)
    with pytest.raises(DataError, match="4 features"):
        data.angles(np.zeros((2, 3)))


def test_arrays_are_read_only() -> None:
    data = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="read-only"):
        data.x_train[0, 0] = 1.0


def test_same_seed_same_arrays_different_seed_different_split() -> None:
    a = load_dataset("digits", classes=[3, 5], features=6, test_fraction=0.2, seed=11)
    b = load_dataset("digits", classes=[3, 5], features=6, test_fraction=0.2, seed=11)
    c = load_dataset("digits", classes=[3, 5], features=6, test_fraction=0.2, seed=12)
    _assert_same(a, b)
    assert a.x_train.shape == c.x_train.shape
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)


def test_max_train_keeps_stratified_seeded_subsample() -> None:
    full = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=3)
    small = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=3, max_train=10)
    again = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=3, max_train=10)
    assert small.x_train.shape == (10, 4) and np.bincount(small.y_train).tolist() == [5, 5]
    _assert_same(small, again)
    np.testing.assert_array_equal(small.x_test.shape, full.x_test.shape)  # test split untouched in size
    # Re-standardized on the subsample alone.
    np.testing.assert_allclose(small.x_train.mean(axis=0), 0.0, atol=ROUNDING_TOL)
    assert "10 train / 20 test" in small.description
    capped = load_dataset("iris", classes=[1, 2], features=4, test_fraction=0.2, seed=3, max_train=1000)
    _assert_same(capped, full)


def test_max_train_keeps_every_class_when_tiny() -> None:
    data = load_dataset("digits", classes=[3, 5], features=2, test_fraction=0.2, seed=0, max_train=2)
    assert sorted(data.y_train.tolist()) == [0, 1]


def test_mnist_idx_raw_gz_and_npz_agree(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    raw = load_dataset("mnist", [3, 5], 784, 0.5, 0, path=str(_write_idx_dir(tmp_path / "raw", arrays)))
    gz = load_dataset("mnist", [3, 5], 784, 0.5, 0, path=str(_write_idx_dir(tmp_path / "gz", arrays, compress=True)))
    npz = load_dataset("mnist", [3, 5], 784, 0.5, 0, path=str(_write_npz(tmp_path / "mnist.npz", arrays)))
    _assert_same(raw, gz)
    _assert_same(raw, npz)
    # Own split kept: 4 each of 3 and 5 among 40 train, 2 each among 20 test; test_fraction ignored.
    assert raw.x_train.shape == (8, 784) and raw.x_test.shape == (4, 784)
    expected = (arrays["y_train"][np.isin(arrays["y_train"], [3, 5])] == 5).astype(np.int64)
    np.testing.assert_array_equal(raw.y_train, expected)
    assert raw.description == "mnist: 3 (0) vs 5 (1), 784 features, 8 train / 4 test"


def test_mnist_pixels_become_float_features(tmp_path: Path) -> None:
    arrays = _mnist_arrays(n_train=60)
    data = load_dataset("mnist", [0, 1], 784, 0.2, 0, path=str(_write_npz(tmp_path / "m.npz", arrays)))
    train = arrays["x_train"][np.isin(arrays["y_train"], [0, 1])].reshape(-1, 784).astype(np.float64)
    expected = (train - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(data.x_train, expected, atol=ROUNDING_TOL)


def test_mnist_pca_and_flat_npz(tmp_path: Path) -> None:
    arrays = _mnist_arrays(n_train=100)
    arrays["x_train"] = arrays["x_train"].reshape(100, 784)
    arrays["x_test"] = arrays["x_test"].reshape(20, 784)
    data = load_dataset("mnist", [1, 7], 4, 0.2, 0, path=str(_write_npz(tmp_path / "flat.npz", arrays)))
    assert data.x_train.shape == (20, 4) and data.x_test.shape == (4, 4)
    assert "(PCA of 784)" in data.description


def test_transforms_fitted_on_train_only(tmp_path: Path) -> None:
    arrays = _mnist_arrays(n_train=100)
    changed = dict(arrays, x_test=np.random.default_rng(99).integers(0, 256, arrays["x_test"].shape, dtype=np.uint8))
    base = load_dataset("mnist", [2, 8], 5, 0.2, 0, path=str(_write_npz(tmp_path / "a.npz", arrays)))
    other = load_dataset("mnist", [2, 8], 5, 0.2, 0, path=str(_write_npz(tmp_path / "b.npz", changed)))
    for field in ("x_train", "y_train", "angle_offset", "angle_scale"):
        np.testing.assert_array_equal(getattr(base, field), getattr(other, field))
    np.testing.assert_array_equal(base.y_test, other.y_test)
    assert not np.allclose(base.x_test, other.x_test)


def test_zero_range_feature_encodes_as_zero_angle(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    arrays["x_train"][:, 0, 0] = 7  # constant pixel on the train split
    data = load_dataset("mnist", [3, 5], 784, 0.2, 0, path=str(_write_npz(tmp_path / "c.npz", arrays)))
    assert data.angle_scale[0] == 0.0
    assert np.all(np.isfinite(data.angles(data.x_test)))
    assert np.all(data.angles(data.x_train)[:, 0] == 0.0)


def test_data_error_is_value_error_and_hpcqnn_error() -> None:
    assert issubclass(DataError, ValueError) and issubclass(DataError, HpcqnnError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "cifar"}, r"unknown dataset 'cifar'; expected one of iris, digits, mnist"),
        ({"classes": [1]}, r"classes must be two distinct labels from \[0, 1, 2\]"),
        ({"classes": [0, 1, 2]}, r"classes must be two distinct labels"),
        ({"classes": [1, 1]}, r"same label twice"),
        ({"classes": [1, 3]}, r"class 3 is not in the data"),
        ({"classes": [1.0, 2.0]}, r"classes must be two distinct labels"),
        ({"classes": 5}, r"classes must be two distinct labels"),
        ({"features": 0}, r"features must be an integer from 1 to 4"),
        ({"features": 5}, r"features must be an integer from 1 to 4 \(the raw feature count\), got 5"),
        ({"test_fraction": 0.0}, r"test_fraction must be a number strictly between 0 and 1"),
        ({"test_fraction": 1.0}, r"test_fraction must be a number strictly between 0 and 1"),
        ({"test_fraction": -0.2}, r"test_fraction must be"),
        ({"test_fraction": 0.005}, r"splits 100 examples into 99 train / 1 test"),
        ({"test_fraction": 0.995}, r"splits 100 examples into 0 train / 100 test"),
        ({"seed": -1}, r"seed must be a non-negative integer"),
        ({"max_train": -3}, r"max_train must be a non-negative integer"),
        ({"max_train": 1}, r"max_train=1 cannot hold one example of each class"),
    ],
)
def test_argument_errors(kwargs: dict, match: str) -> None:
    args = {"name": "iris", "classes": [1, 2], "features": 4, "test_fraction": 0.2, "seed": 0} | kwargs
    with pytest.raises(DataError, match=match):
        load_dataset(**args)


def test_digits_class_range_and_pca_needs_enough_examples() -> None:
    with pytest.raises(DataError, match=r"class 10 is not in the data; classes must be two distinct labels"):
        load_dataset("digits", [3, 10], 8, 0.2, 0)
    with pytest.raises(DataError, match=r"features must be an integer from 1 to 64"):
        load_dataset("digits", [3, 5], 65, 0.2, 0)
    with pytest.raises(DataError, match=r"PCA to 8 components needs at least 8 training examples, got 4"):
        load_dataset("digits", [3, 5], 8, 0.2, 0, max_train=4)


def test_mnist_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist needs path"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0)
    with pytest.raises(DataError, match=r"does not exist"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(tmp_path / "nowhere"))
    other = tmp_path / "mnist.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"neither a directory of IDX files nor an .npz file"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(other))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"lacks train-images-idx3-ubyte \(or train-images-idx3-ubyte.gz\)"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(empty))


def test_mnist_idx_errors(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    bad_magic = _write_idx_dir(tmp_path / "magic", arrays)
    (bad_magic / MNIST_FILES["y_train"]).write_bytes(_idx_bytes(arrays["y_train"], magic=0x00000803))
    with pytest.raises(DataError, match=r"IDX magic number 0x00000803 is not 0x00000801 \(unsigned-byte labels\)"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(bad_magic))

    bad_size = _write_idx_dir(tmp_path / "size", arrays)
    (bad_size / MNIST_FILES["x_test"]).write_bytes(_idx_bytes(arrays["x_test"])[:-5])
    with pytest.raises(DataError, match=r"declares shape \(20, 28, 28\) \(15680 bytes\) but holds 15675 data bytes"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(bad_size))

    truncated = _write_idx_dir(tmp_path / "header", arrays)
    (truncated / MNIST_FILES["x_train"]).write_bytes(_idx_bytes(arrays["x_train"])[:8])
    with pytest.raises(DataError, match=r"truncated IDX header"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(truncated))

    mismatch = _write_idx_dir(tmp_path / "count", dict(arrays, y_train=arrays["y_train"][:30]))
    expected = r"x_train must be \[n, \.\.\.\] and y_train \[n\], got shapes \(40, 28, 28\) and \(30,\)"
    with pytest.raises(DataError, match=expected):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(mismatch))

    corrupt = _write_idx_dir(tmp_path / "corrupt", arrays, compress=True)
    (corrupt / f"{MNIST_FILES['y_test']}.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"cannot read"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(corrupt))


def test_mnist_npz_errors(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    partial = _write_npz(tmp_path / "partial.npz", {k: v for k, v in arrays.items() if k != "y_test"})
    with pytest.raises(DataError, match=r"\.npz lacks y_test; expected arrays x_train, y_train, x_test, y_test"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(partial))

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"definitely not a zip archive")
    with pytest.raises(DataError, match=r"cannot read as \.npz"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(garbage))

    single = tmp_path / "single.npz"
    with single.open("wb") as handle:
        np.save(handle, arrays["x_train"])
    with pytest.raises(DataError, match=r"holds a single array"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(single))

    float_labels = _write_npz(tmp_path / "float.npz", dict(arrays, y_test=arrays["y_test"].astype(np.float64)))
    with pytest.raises(DataError, match=r"y_test must hold integer labels, got dtype float64"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(float_labels))

    shapes = _write_npz(tmp_path / "shapes.npz", dict(arrays, x_test=arrays["x_test"][:, :14, :]))
    with pytest.raises(DataError, match=r"train images have shape \(28, 28\) but test images \(14, 28\)"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=str(shapes))


def test_mnist_class_errors(tmp_path: Path) -> None:
    arrays = _mnist_arrays()
    path = str(_write_npz(tmp_path / "m.npz", arrays))
    with pytest.raises(DataError, match=r"mnist: class 11 is not in the data; classes must be two distinct"):
        load_dataset("mnist", [3, 11], 4, 0.2, 0, path=path)

    no_train_fives = dict(arrays, y_train=np.where(arrays["y_train"] == 5, 4, arrays["y_train"]).astype(np.uint8))
    path = str(_write_npz(tmp_path / "no5.npz", no_train_fives))
    with pytest.raises(DataError, match=r"the training split holds no example of class 5; each class needs at least"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=path)

    no_test_threes = dict(arrays, y_test=np.where(arrays["y_test"] == 3, 4, arrays["y_test"]).astype(np.uint8))
    path = str(_write_npz(tmp_path / "no3.npz", no_test_threes))
    with pytest.raises(DataError, match=r"the test split holds no example of class 3"):
        load_dataset("mnist", [3, 5], 4, 0.2, 0, path=path)
