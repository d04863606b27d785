"""SavedModel export: an explicit tf.Module with serving signatures that take raw caption strings.

Tokenization (the same rule as text.tokenize, in TF string ops) and the vocabulary lookup are in
the graph, so a serving system needs nothing else. Signatures:

  sample(captions, num_samples, temperature, seed) -> images uint8 [B, S, side, side], log_prob,
                                                      attention [B, S, pixels, words], tokens
  greedy(captions)                                 -> the same with S = 1
  beam(captions)                                   -> the beam_width beams, best first
  score(captions, images)                          -> log_likelihood [captions, images] (nats)
  score_ids(caption_ids, caption_len, images)      -> the same from token ids
  log_likelihood(caption_ids, caption_len, images) -> log p(image i | caption i) [N]
  metadata()                                       -> config JSON, vocabulary, beam width

We export a tf.Module (the Model Garden ExportModule pattern) rather than ``model.save``: tfa's
seq2seq classes do not survive Keras serialization (tensorflow/addons #2675, #2432). tfa's custom
C++ kernel (gather_tree, used by beam search) is switched off before tracing so the graph holds
only core TF ops and loads where tensorflow_addons is not installed (TF Serving).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile

import tensorflow as tf

from text2pixel import layout, sampling, text as text_lib
from text2pixel.config import Config
from text2pixel.errors import ModelFileError
from text2pixel.model import AlignPixelRNN

# An export holds TensorFlow ops only: the fused C++ loop (text2pixel/kernels) is built per machine
# and a SavedModel that needed it would not load elsewhere. Its graph loop computes the same.
GRAPH = "graph"

# The ExportModule tf.functions saved as signatures (LoadedModel and TF Serving call these).
SIGNATURES = ("sample", "greedy", "beam", "score", "score_ids", "log_likelihood", "metadata")


def _disable_tfa_custom_kernels():
  os.environ["TF_ADDONS_PY_OPS"] = "1"
  import tensorflow_addons as tfa
  tfa.options.disable_custom_kernel()


class _Holder:
  """Not trackable, so tf.saved_model does not walk into the Keras model it holds."""

  def __init__(self, model):
    self.model = model


class ExportModule(tf.Module):
  """Everything a served text2pixel model needs, with fixed-signature tf.functions (without
  autograph, which has nothing to convert here: see sampling.make_generate_fn)."""

  def __init__(self, model: AlignPixelRNN, vocab: text_lib.Vocabulary, config: Config,
               beam_width: int = 4):
    super().__init__(name="text2pixel")
    # Only the variables are tracked: tracking the Keras model would make tf.saved_model trace
    # every Keras layer's call on its own, which fails for tfa's attention mechanism (its memory
    # is set per call). The tf.functions below capture these variables.
    self._model_holder = _Holder(model)
    self.model_variables = list(model.variables)
    self.config_json = tf.constant(config.to_json())
    self.vocabulary = tf.constant(vocab.words)
    self.beam_width_value = beam_width
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(vocab.words),
                                            tf.range(len(vocab), dtype=tf.int32)),
        default_value=text_lib.UNK_ID)
    self._max_len = config.max_caption_len
    self._config = config

  def encode(self, captions: tf.Tensor):
    """Raw strings -> padded ids [B, max_len], lengths [B], tokens; asserts on unusable captions."""
    tokens = text_lib.tokenize_tf(captions)
    counts = tokens.row_lengths()
    checks = [
        tf.debugging.assert_positive(counts, message="caption has no words"),
        tf.debugging.assert_less_equal(
            counts, tf.cast(self._max_len - 1, counts.dtype),
            message=f"caption is too long: the limit is {self._max_len - 1} words"),
    ]
    with tf.control_dependencies(checks):
      ids = self.table.lookup(tokens)
    eos = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.shape(captions)[0]], text_lib.EOS_ID), tf.ones_like(counts))
    ids = tf.concat([ids, eos], axis=1)
    lengths = tf.cast(ids.row_lengths(), tf.int32)
    padded = ids.to_tensor(default_value=text_lib.PAD_ID, shape=[None, self._max_len])
    return padded, lengths, tokens.to_tensor(default_value="")

  def _generate(self, captions, method, num_samples=1, temperature=1.0, seed=0):
    ids, lengths, tokens = self.encode(captions)
    out = sampling.generate(self._model_holder.model, ids, lengths, method, num_samples=num_samples,
                            temperature=temperature, beam_width=self.beam_width_value,
                            seed=seed, loop=GRAPH,
                            guidance=None if method == "beam" else self._config.guidance)
    return {**out, "tokens": tokens}

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32),
      tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)])
  def sample(self, captions, num_samples, temperature, seed):
    return self._generate(captions, "sample", num_samples, temperature, seed)

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
  def greedy(self, captions):
    return self._generate(captions, "greedy")

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string)])
  def beam(self, captions):
    return self._generate(captions, "beam")

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.string),
                                                 tf.TensorSpec([None, None, None], tf.uint8)])
  def score(self, captions, images):
    ids, lengths, _ = self.encode(captions)
    side = self._config.image_side
    tf.debugging.assert_equal(tf.shape(images)[1:], tf.constant([side, side]),
                              message=f"images must be {side}x{side}")
    return {"log_likelihood": self._model_holder.model.log_likelihood_matrix(ids, lengths, images,
                                                                             loop=GRAPH)}

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32),
                                                 tf.TensorSpec([None], tf.int32),
                                                 tf.TensorSpec([None, None, None], tf.uint8)])
  def score_ids(self, caption_ids, caption_len, images):
    """Like score, from token ids (lets evaluation score the empty caption, [<eos>])."""
    return {"log_likelihood": self._model_holder.model.log_likelihood_matrix(
        caption_ids, caption_len, images, loop=GRAPH)}

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.int32),
                                                 tf.TensorSpec([None], tf.int32),
                                                 tf.TensorSpec([None, None, None], tf.uint8)])
  def log_likelihood(self, caption_ids, caption_len, images):
    """log p(image i | caption i) for matched pairs [N] (bits/dim of a split)."""
    return {"log_likelihood": self._model_holder.model.log_likelihood(
        caption_ids, caption_len, images, loop=GRAPH)}

  @tf.function(autograph=False, input_signature=[])
  def metadata(self):
    return {"config_json": self.config_json, "vocabulary": self.vocabulary,
            "beam_width": tf.constant(self.beam_width_value)}


def export(model: AlignPixelRNN, vocab: text_lib.Vocabulary, config: Config, export_dir: str,
           beam_width: int = 4) -> str:
  """Writes the SavedModel atomically (a temp dir renamed into place) and returns its path.

  ``export_dir`` may be new, empty or an earlier export, which is replaced; anything else is
  refused before any work is done (:func:`layout.check_export_replaceable`).
  """
  export_dir = os.path.normpath(export_dir)
  layout.check_export_replaceable(export_dir)
  _disable_tfa_custom_kernels()
  module = ExportModule(model, vocab, config, beam_width)
  signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURES}
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  # A fresh temp directory of our own beside the target (same file system, so the renames
  # below are atomic); only it and the export it replaces are ever deleted.
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.export-", dir=parent)
  try:
    # Saved: the signatures and the state they capture, not the module's tf.functions as
    # attributes too, which would store every function twice (a tiny model's file 10.8 -> 5.4 MB,
    # its load time halved; LoadedModel uses only the signatures).
    state = tf.Module(name="text2pixel")
    state.model_variables, state.table = module.model_variables, module.table
    tf.saved_model.save(state, tmp, signatures=signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    with open(os.path.join(tmp, layout.EXPORT_INFO), "w", encoding="utf-8") as f:
      json.dump({"config": json.loads(config.to_json()), "vocabulary": vocab.words,
                 "beam_width": beam_width}, f, indent=1)
    layout.check_export_replaceable(export_dir)  # again: it may have changed during the export
    old = None
    if os.path.isdir(export_dir) and os.listdir(export_dir):  # an earlier export
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.replaced-", dir=parent)
      os.replace(export_dir, old)
    elif os.path.isdir(export_dir):
      os.rmdir(export_dir)  # empty
    os.replace(tmp, export_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if old:
    shutil.rmtree(old)
  return export_dir


class LoadedModel:
  """A reloaded export; needs only TensorFlow (no tensorflow_addons, no text2pixel model code)."""

  def __init__(self, export_dir: str):
    # Config and vocabulary come from the small JSON beside the SavedModel, so captions can be
    # checked (and a mistyped one reported) in a second; the SavedModel itself, whose load takes
    # several seconds, is loaded on first use and must agree with the JSON.
    self.export_dir = export_dir
    self.config, self.vocab, self.beam_width = layout.read_export_info(export_dir)

  @functools.cached_property
  def module(self):
    """The loaded SavedModel (loaded on first use)."""
    from google.protobuf.message import DecodeError
    try:
      module = tf.saved_model.load(self.export_dir)
      meta = {k: v.numpy() for k, v in module.signatures["metadata"]().items()}
    except (OSError, KeyError, DecodeError, tf.errors.OpError) as error:  # damaged or foreign
      first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
      raise ModelFileError(f"{self.export_dir} is a damaged or foreign SavedModel "
                           f"({first_line[:300]})") from None
    from text2pixel import config as config_lib
    if [w.decode() for w in meta["vocabulary"]] != self.vocab.words or \
        config_lib.from_json(meta["config_json"].decode()) != self.config:
      raise ModelFileError(f"{self.export_dir}: {layout.EXPORT_INFO} does not describe the "
                           "SavedModel beside it (its vocabulary or config differ); export again")
    return module

  def generate(self, captions, method: str, num_samples: int = 1, temperature: float = 1.0,
               seed: int = 0):
    captions = tf.constant(list(captions))
    if method == "sample":
      out = self.module.signatures["sample"](
          captions=captions, num_samples=tf.constant(num_samples),
          temperature=tf.constant(float(temperature)), seed=tf.constant(seed))
    else:
      out = self.module.signatures[method](captions=captions)
    return {k: v.numpy() for k, v in out.items()}

  def score(self, captions, images):
    out = self.module.signatures["score"](captions=tf.constant(list(captions)),
                                          images=tf.constant(images, tf.uint8))
    return out["log_likelihood"].numpy()

  def ids_signature(self, name, caption_ids, caption_len, images):
    out = self.module.signatures[name](caption_ids=tf.constant(caption_ids, tf.int32),
                                       caption_len=tf.constant(caption_len, tf.int32),
                                       images=tf.constant(images, tf.uint8))
    return out["log_likelihood"].numpy()
