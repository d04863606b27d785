"""One interface to generate and score from either a training run or an exported SavedModel.

Captions are checked in Python first (text.encode_captions) so a person gets a clear message
("the limit is 15 words", "no word is in the vocabulary (unknown: ...)") before any graph runs.
"""

from __future__ import annotations

import functools
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from text2pixel import layout, text as text_lib, tfrecords
from text2pixel.errors import UsageError


def check_guidance(config, method: str, guidance: Optional[float], exported: bool = False) -> None:
  """A usage error for a guidance scale this model cannot sample at (None: the model's own)."""
  if guidance is None or guidance == config.guidance:
    return
  if exported:
    raise UsageError(f"this SavedModel samples at the guidance it was exported with "
                     f"({config.guidance:g}); export again with --guidance {guidance:g}, or "
                     f"sample from the run (--run_dir)")
  if guidance <= 0:
    raise UsageError(f"--guidance must be > 0 (1 = plain sampling), got {guidance:g}")
  if method == "beam" and guidance != 1.0:
    raise UsageError("--guidance is for --method sample or greedy, not beam")
  if guidance != 1.0 and not config.caption_dropout:
    raise UsageError("--guidance needs a model trained with --caption_dropout > 0 (it compares "
                     "the caption with the empty caption, which this model never learnt)")


class Generator:
  """Base: subclasses provide config, vocab, _generate, score_ids and log_likelihood."""

  config = None
  vocab: text_lib.Vocabulary = None
  attends = True
  exported = False  # a SavedModel: its guidance is fixed at export

  @staticmethod
  def open(path: str, beam_width: int = 4) -> "Generator":
    if os.path.exists(os.path.join(path, "saved_model.pb")):
      return SavedModelGenerator(path)
    return CheckpointGenerator(path, beam_width)

  def prepare(self, captions: Sequence[str], warn=None):
    ids = text_lib.encode_captions(self.vocab, captions, self.config.max_caption_len, warn)
    words = [[self.vocab.words[i] if i != text_lib.UNK_ID else t for i, t in
              zip(x[:-1], text_lib.tokenize(c))] + [text_lib.EOS] for x, c in zip(ids, captions)]
    lengths = np.array([len(x) for x in ids], np.int32)
    return tfrecords.pad_ids(ids, self.config.max_caption_len), lengths, words

  def generate(self, captions: Sequence[str], method: str, num_samples: int = 1,
               temperature: float = 1.0, seed: int = 0, warn=None,
               guidance: Optional[float] = None) -> Dict[str, np.ndarray]:
    """images [B, S, side, side] uint8, log_prob [B, S] nats, attention [B, S, pixels, words].
    ``guidance``: classifier-free guidance scale (default the model's, Config.guidance)."""
    if method == "sample" and temperature <= 0:
      raise UsageError("--temperature must be > 0 (use --method greedy for the argmax)")
    if num_samples < 1:
      raise UsageError("--num_samples must be >= 1")
    check_guidance(self.config, method, guidance, exported=self.exported)
    ids, lengths, words = self.prepare(captions, warn)
    out = self._generate(captions, ids, lengths, method, num_samples, temperature, seed,
                         guidance)
    out["words"] = words
    return out

  def score(self, captions: Sequence[str], images: np.ndarray) -> np.ndarray:
    """log p(image j | caption i) [captions, images] in nats."""
    ids, lengths, _ = self.prepare(captions)
    return self.score_ids(ids, lengths, images)

  def score_ids(self, ids, lengths, images) -> np.ndarray:
    """log p(image j | caption i) [captions, images] from padded token ids (nats)."""
    raise NotImplementedError

  def log_likelihood(self, ids, lengths, images) -> np.ndarray:
    """log p(image i | caption i) [N] for matched pairs (nats)."""
    raise NotImplementedError


class CheckpointGenerator(Generator):
  """A training run's latest weights. Config and vocabulary are read first, so captions are
  checked in a second; the model is built and restored on first use."""

  def __init__(self, run_dir: str, beam_width: int = 4):
    self.run_dir = run_dir
    self.config, self.vocab, _ = layout.load_trained_run_config(run_dir)
    self.attends = self.config.conditioning == "attention"
    self.beam_width = beam_width
    self._functions = {}

  @functools.cached_property
  def model(self):
    from text2pixel import training
    return training.load_run(self.run_dir)[2]

  @functools.cached_property
  def _scorers(self):
    length, side = self.config.max_caption_len, self.config.image_side
    signature = [tf.TensorSpec([None, length], tf.int32), tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([None, side, side], tf.uint8)]
    # One trace each, whatever the block sizes: (all pairs, matched pairs).
    return (tf.function(self.model.log_likelihood_matrix, input_signature=signature,
                        autograph=False),
            tf.function(self.model.log_likelihood, input_signature=signature, autograph=False))

  def _generate(self, captions, ids, lengths, method, num_samples, temperature, seed,
                guidance=None):
    from text2pixel import sampling
    key = (method, num_samples, guidance)
    if key not in self._functions:
      self._functions[key] = sampling.make_generate_fn(self.model, method, num_samples,
                                                       self.beam_width, guidance=guidance)
    out = self._functions[key](tf.constant(ids), tf.constant(lengths),
                               tf.constant(float(temperature)), tf.constant(int(seed)))
    return {k: v.numpy() for k, v in out.items()}

  def score_ids(self, ids, lengths, images):
    return self._scorers[0](tf.constant(ids, tf.int32), tf.constant(lengths, tf.int32),
                            tf.constant(images, tf.uint8)).numpy()

  def log_likelihood(self, ids, lengths, images):
    return self._scorers[1](tf.constant(ids, tf.int32), tf.constant(lengths, tf.int32),
                            tf.constant(images, tf.uint8)).numpy()


class SavedModelGenerator(Generator):
  exported = True

  def __init__(self, export_dir_or_loaded):
    from text2pixel import export
    self.loaded = export_dir_or_loaded if isinstance(export_dir_or_loaded, export.LoadedModel) \
        else export.LoadedModel(export_dir_or_loaded)
    self.config, self.vocab = self.loaded.config, self.loaded.vocab
    self.attends = self.config.conditioning == "attention"

  def _generate(self, captions, ids, lengths, method, num_samples, temperature, seed,
                guidance=None):
    out = self.loaded.generate(captions, method, num_samples, temperature, seed)
    out.pop("tokens", None)
    return out

  def score(self, captions, images):
    self.prepare(captions)  # the Python checks, for their clearer messages
    return self.loaded.score(captions, images)

  def score_ids(self, ids, lengths, images):
    return self.loaded.ids_signature("score_ids", ids, lengths, images)

  def log_likelihood(self, ids, lengths, images):
    return self.loaded.ids_signature("log_likelihood", ids, lengths, images)

