"""Shared fixtures: one small real MNIST-with-captions build and one tiny training run per test
session, however many pytest-xdist workers run it (the first worker to need one builds it, the
others wait for it and then read the same files)."""

import fcntl
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def _built_once(tmp_path_factory, name, build):
  """The folder ``name`` in the session's shared temp folder, built by ``build(path)`` unless a
  worker already built it. Users only read it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp sits in the session's
    root = root.parent
  path = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not (root / f"{name}.done").exists():
      shutil.rmtree(path, ignore_errors=True)  # a build that failed half-way
      build(str(path))
      (root / f"{name}.done").touch()
  return str(path)


@pytest.fixture(scope="session")
def mnist_arrays():
  from datasets import mnist
  return mnist.load_mnist()


@pytest.fixture(scope="session")
def mnist_captions_dir(tmp_path_factory):
  """Real MNIST digits, real TFRecords: 640 train / 64 validation / 64 test / 64 held-out."""
  def build(out):
    from datasets import mnist_captions
    mnist_captions.build(out, num_train=640, num_validation=64, num_test=64, num_heldout=64,
                         seed=7, num_shards=2, log=lambda *_: None)
  return _built_once(tmp_path_factory, "mnist_captions", build)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, mnist_captions_dir):
  """A real tiny training run (8x8 images, 60 steps) that sampling/export/evaluation tests share."""
  def build(run_dir):
    from text2pixel import config as config_lib, training
    config = config_lib.get_preset("tiny").replace(eval_every=1000, sample_every=1000)
    training.Trainer(config, mnist_captions_dir, run_dir, log=lambda *_: None,
                     preset="tiny").train()
  return _built_once(tmp_path_factory, "tiny_run", build)


def pytest_collection_modifyitems(items):
  """The longest work first (the multi-process tests, then the files whose fixtures make a run
  or an export), so that the two xdist workers run out of tests at about the same time instead
  of one finishing a three-minute test alone."""
  items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                               item.get_closest_marker("xdist_group") is None))
