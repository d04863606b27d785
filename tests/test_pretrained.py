"""The model shipped in pretrained/cpu_small: a complete, small export that loads from the
repository as it is cloned and samples valid images (its quality is in pretrained/README.md)."""

import os

import numpy as np

from text2pixel import config as config_lib, export, layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "pretrained", "cpu_small")


def test_the_shipped_export_loads_and_samples_valid_images():
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(SHIPPED) for f in files)
  assert size < 20 * 2 ** 20, size  # the bound for a committed model
  loaded = export.LoadedModel(SHIPPED)
  # The shipped model: cpu_small's sizes with BiLSTM keys over word-embedding values, trained
  # with caption dropout (so that it samples with guidance 2) and attention supervision.
  shipped = config_lib.get_preset("cpu_small").replace(encoder="bilstm_keys", caption_dropout=0.1,
                                                         guidance=2.0)
  assert {f: getattr(loaded.config, f) for f in layout.MODEL_FIELDS} == \
      {f: getattr(shipped, f) for f in layout.MODEL_FIELDS}
  assert loaded.config.guidance == 2.0 and loaded.config.caption_dropout == 0.1
  captions = ["the digit 1 is at the top left of the image"]
  out = loaded.generate(captions, "sample", num_samples=2, temperature=1.0, seed=3)
  images, log_prob = np.asarray(out["images"]), np.asarray(out["log_prob"])
  assert images.dtype == np.uint8 and images.shape == (1, 2, 32, 32)
  assert np.all(np.isfinite(log_prob)) and np.all(log_prob < 0)
  assert images.max() > 128 and (images > 64).mean() < 0.5  # strokes on a dark canvas
  again = loaded.generate(captions, "sample", num_samples=2, temperature=1.0, seed=3)
  np.testing.assert_array_equal(np.asarray(again["images"]), images)  # the seed decides
  # score is the model's own likelihood (guidance only changes how samples are drawn): its
  # samples are likelier under their caption than under one naming another digit and place.
  other = ["the digit 8 is at the bottom right of the image"]
  own, elsewhere = loaded.score(captions, images[0])[0], loaded.score(other, images[0])[0]
  assert np.all(np.isfinite(own)) and np.all(own < 0)
  assert np.all(own > elsewhere + 10), (own, elsewhere)
