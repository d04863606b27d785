"""Shared fixtures: one small real MNIST-with-captions build per test session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_arrays():
  from datasets import mnist
  return mnist.load_mnist()


@pytest.fixture(scope="session")
def mnist_captions_dir(tmp_path_factory, mnist_arrays):
  """Real MNIST digits, real TFRecords: 640 train / 64 validation / 64 test / 64 held-out."""
  from datasets import mnist_captions
  out = str(tmp_path_factory.mktemp("mnist_captions"))
  mnist_captions.build(out, num_train=640, num_validation=64, num_test=64, num_heldout=64,
                       seed=7, num_shards=2, log=lambda *_: None)
  return out


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, mnist_captions_dir):
  """A real tiny training run (8x8 images, 60 steps) that sampling/export/evaluation tests share."""
  from text2pixel import config as config_lib, training
  run_dir = str(tmp_path_factory.mktemp("tiny_run"))
  config = config_lib.get_preset("tiny").replace(eval_every=1000, sample_every=1000)
  training.Trainer(config, mnist_captions_dir, run_dir, log=lambda *_: None, preset="tiny").train()
  return run_dir
