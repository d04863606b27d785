"""The model shipped in pretrained/cpu_small: a complete, small export that loads from the
repository as it is cloned and samples valid images (its quality is in pretrained/README.md)."""

import os

import numpy as np

from text2pixel import config as config_lib, export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "pretrained", "cpu_small")


def test_the_shipped_export_loads_and_samples_valid_images():
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SHIPPED) for f in files)
  assert size < 20 * 2 ** 20, size  # the bound for a committed model
  loaded = export.LoadedModel(SHIPPED)
  preset = config_lib.get_preset("cpu_small")
  model_fields = ("image_side", "word_embedding_dim", "encoder_units", "decoder_units",
                  "attention_units", "conditioning", "position_embedding_dim", "above_context")
  assert all(getattr(loaded.config, f) == getattr(preset, f) for f in model_fields)
  captions = ["the digit 1 is at the top left of the image"]
  out = loaded.generate(captions, "sample", num_samples=2, temperature=1.0, seed=3)
  images, log_prob = np.asarray(out["images"]), np.asarray(out["log_prob"])
  assert images.dtype == np.uint8 and images.shape == (1, 2, 32, 32)
  assert np.all(np.isfinite(log_prob)) and np.all(log_prob < 0)
  assert images.max() > 128 and (images > 64).mean() < 0.5  # strokes on a dark canvas
  again = loaded.generate(captions, "sample", num_samples=2, temperature=1.0, seed=3)
  np.testing.assert_array_equal(np.asarray(again["images"]), images)  # the seed decides
  scored = loaded.score(captions, images[0])
  np.testing.assert_allclose(scored[0], log_prob[0], rtol=1e-4)
