"""Training: distribution strategy, the train step, checkpoints that resume exactly, summaries.

A run directory holds everything a run needs to be continued, reloaded or exported:
  config.json           the resolved Config (a restart checks the flags against it)
  run.json              the preset the run was started from (a restart checks it too), and the
                        run whose weights it started from (--init_from), if any
  vocab.json            the data set's vocabulary (copied, so the run stands alone)
  checkpoints/          model, optimizer slots, step, training-data iterator, RNG, and the
                        weights' moving average if ema_decay is set (last N kept)
  train/, validation/   TensorBoard event files
  samples/              sample grids and attention pictures written during training
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shutil
import signal
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from text2pixel import atomic
from text2pixel import config as config_lib
from text2pixel import model as model_lib
from text2pixel import judge as judge_lib, layout, metrics as metrics_lib, pictures, sampling
from text2pixel import text as text_lib, tfrecords, widening
from text2pixel.config import Config
from text2pixel.errors import CheckpointError, ConfigError, DataError, TrainingError

JUDGE_METRICS = ("judge_accuracy", "judge_accuracy_heldout")
# The reader skips captions longer than max_caption_len; a few are tolerated (and reported),
# more mean the config does not fit the data set.
MAX_DROPPED_CAPTION_FRACTION = 0.01


@contextlib.contextmanager
def precision_policy(name: str):
  """Keras' global mixed-precision policy set to ``name`` for the block, then restored.

  The policy is process-wide and read whenever a layer is made, including layers made while a
  tf.function traces: so the Trainer enters this around everything that builds or traces, and
  a model built later in the same process gets the policy it would have had anyway.
  """
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)


def make_strategy(name: str, collective_timeout_s: float = 120.0) -> tf.distribute.Strategy:
  """default: one device; mirrored: all visible GPUs; multi_worker: the cluster in TF_CONFIG.

  Under multi_worker a collective that waits longer than collective_timeout_s (a worker died)
  fails instead of hanging, and the surviving workers exit with an error.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    # Every GPU; on a machine without one, every logical CPU device (one unless the process
    # split its CPU with tf.config.set_logical_device_configuration, as a test does).
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy(
        [d.name for d in gpus or tf.config.list_logical_devices("CPU")])
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise TrainingError("--strategy=multi_worker needs TF_CONFIG describing the cluster")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  raise TrainingError(f"unknown strategy '{name}'; choose default, mirrored or multi_worker")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  return resolver.task_type in ("chief", None) or (
      resolver.task_type == "worker" and resolver.task_id == 0 and
      "chief" not in resolver.cluster_spec().as_dict())


@dataclasses.dataclass
class _Clock:
  """When this start of the run began, the training seconds of earlier starts, the time bound."""
  started: float
  seconds_before: float
  budget: float


@dataclasses.dataclass
class _ProgressWindow:
  """The steps since the last progress line: how many, when they began, the applied ones' losses."""
  started: float = dataclasses.field(default_factory=time.time)
  steps: int = 0
  losses: List[float] = dataclasses.field(default_factory=list)


AVERAGE_KEY = "averaged_weights"  # the moving average's name in a checkpoint


class WeightAverage:
  """An exponential moving average of the model's trainable weights (``ema_decay``).

  After every update a <- d_t a + (1 - d_t) w with d_t = min(decay, (1 + t) / (10 + t)) for the
  t-th update (the warm-up keeps the first steps' average from being mostly the initial weights).
  At a constant learning rate the weights circle around a better point; their average sits
  nearer it. Validation, samples, exports and every binary that loads the run use the average.
  """

  def __init__(self, variables: List[tf.Variable], decay: float):
    self.decay = decay
    self.sources = list(variables)
    # ONLY_FIRST_REPLICA: every replica computes the same value (weights are kept in sync), and
    # the update may run in replica context.
    self.averages = [tf.Variable(tf.identity(v), trainable=False, name=f"average_{i}",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                     for i, v in enumerate(self.sources)]

  def update(self, num_updates: tf.Tensor) -> None:
    t = tf.cast(num_updates, tf.float32)
    decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
    for average, source in zip(self.averages, self.sources):
      average.assign(decay * average + (1.0 - decay) * tf.cast(source, tf.float32))

  def reset(self) -> None:
    """The average starts at the current weights (a run that turns ema_decay on mid-way)."""
    for average, source in zip(self.averages, self.sources):
      average.assign(source)

  @contextlib.contextmanager
  def swapped_in(self):
    """The model holds the averaged weights for the block, its own weights again after it."""
    kept = [v.numpy() for v in self.sources]
    for average, source in zip(self.averages, self.sources):
      source.assign(average)
    try:
      yield
    finally:
      for value, source in zip(kept, self.sources):
        source.assign(value)


def checkpoint_has(path: str, key: str) -> bool:
  return any(name.startswith(key + "/")
             for name in tf.train.load_checkpoint(path).get_variable_to_shape_map())


def restore_model(model, config: Config, path: str, average: bool = True) -> None:
  """The model's weights from checkpoint ``path``: its moving average where the run keeps one
  (what validation, samples and exports show) and ``average``, else the weights as trained."""
  restore_checked(tf.train.Checkpoint(model=model), path, partial=True)
  if average and config.ema_decay and checkpoint_has(path, AVERAGE_KEY):
    # The checkpoint's averages, listed in the model's own variable order, restore straight
    # into the model's variables.
    tf.train.Checkpoint(**{AVERAGE_KEY: list(model.trainable_variables)}).restore(
        path).expect_partial().assert_existing_objects_matched()


class LinearWarmup(tf.keras.optimizers.schedules.LearningRateSchedule):
  """The learning rate rises linearly over the first ``warmup_steps`` updates, then stays.

  For a run that starts from another run's weights (--init_from): its RMSProp slots start at
  zero, so each weight's first updates are about 3x the learning rate (g / sqrt(0.1 g^2)) and
  would undo much of what the weights know.
  """

  def __init__(self, learning_rate: float, warmup_steps: int):
    self.learning_rate, self.warmup_steps = learning_rate, warmup_steps

  def __call__(self, step):
    ramp = tf.cast(step + 1, tf.float32) / float(max(self.warmup_steps, 1))
    return self.learning_rate * tf.minimum(1.0, ramp)

  def get_config(self):
    return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


OPTIMIZERS = {"rmsprop": tf.keras.optimizers.RMSprop, "adam": tf.keras.optimizers.Adam}


class Trainer:
  """Builds everything under a strategy and trains; ``train()`` returns the final metrics.

  In parts, each a section below: building (strategy, model, optimizer, checkpoint, data), the
  step functions (train_step, eval_step), checkpoints and resuming, validation (bits/dim,
  caption gain, the digit judge), the loop (train), summaries and pictures.
  """

  # --- building: strategy, model, optimizer, checkpoint, data ---------------------------------

  def __init__(self, config: Config, data_dir: str, run_dir: str, strategy_name: str = "default",
               log=print, collective_timeout_s: float = 120.0, preset: Optional[str] = None,
               init_from: Optional[str] = None):
    self.config = config
    self.data_dir = data_dir
    self.run_dir = run_dir
    self.log = log
    self.strategy = make_strategy(strategy_name, collective_timeout_s)
    self.chief = is_chief(self.strategy)
    self.stop_requested = False

    self.vocab = layout.load_vocabulary(data_dir)
    self.order_words, self.order_forbidden = [], []
    metadata = layout.read_metadata(data_dir)
    has_order = metadata.get("dataset") == "mnist_captions" and config.conditioning != "none"
    for field in ("order_contrast", "attention_supervision"):
      if getattr(config, field) and not has_order:
        raise TrainingError(f"{field} reads the digit words of MNIST-with-captions captions; "
                            f"not for data set {metadata.get('dataset')!r} or "
                            f"conditioning={config.conditioning!r} (pass --{field} 0)")
    # Validation reports where the attention of each digit's strokes goes; the records hold
    # the digits' boxes (attention_supervision trains on it). It needs the fast loop, which
    # for pixel_loop="graph" costs validation training's memory: there only if supervised.
    self.attention_words = has_order and config.conditioning == "attention" and (
        config.pixel_loop == "fused" or config.attention_supervision > 0)
    if has_order:  # validation reports the order preference; order_contrast trains on it
      digit_id = digit_word_ids(self.vocab)
      self.order_words = list(digit_id.values())
      # A swapped training caption can be a held-out combination ("3 left of 5" -> "5 left of
      # 3"): captions naming a held-out pair of digits, in any relation, get no term, so no
      # held-out caption enters training even as a negative.
      self.order_forbidden = [(digit_id[d[0]], digit_id[d[1]])
                              for d in metadata.get("held_out", {}).values()
                              if len(d) == 2 and d[0] in digit_id and d[1] in digit_id]
    self.train_files = layout.split_files(data_dir, "train")
    self.validation_files = layout.split_files(data_dir, "validation")
    self.dropped_captions = {split: self._check_caption_lengths(split, files)
                             for split, files in (("train", self.train_files),
                                                  ("validation", self.validation_files))}
    replicas = self.strategy.num_replicas_in_sync
    if config.batch_size % replicas:
      raise TrainingError(f"batch_size {config.batch_size} does not split over {replicas} "
                          "replicas; use a multiple")
    if self.chief:
      layout.check_run_dir(run_dir)
      layout.check_run_vocabulary(run_dir, self.vocab, data_dir)
    os.makedirs(run_dir, exist_ok=True)
    if self.chief:
      config_lib.save(config, os.path.join(run_dir, "config.json"))
      if not os.path.exists(os.path.join(run_dir, layout.RUN_INFO)):
        layout.write_run_info(run_dir, {"preset": preset,
                                        "init_from": init_from and os.path.abspath(init_from)})
      self.vocab.save(os.path.join(run_dir, "vocab.json"))
    self.init_from = init_from

    with self._policy():
      self._build(config, strategy_name)

  def _policy(self):
    return precision_policy(self.config.mixed_precision)

  def _check_caption_lengths(self, split: str, files: List[str]) -> int:
    """How many captions of a split the reader will skip as too long; refuses too many."""
    c = self.config
    lengths = tfrecords.caption_lengths(files)
    dropped = int(np.sum(lengths > c.max_caption_len))
    if dropped:
      self.log(f"{dropped} of {len(lengths)} {split} captions ({100 * dropped / len(lengths):.2f}%)"
               f" are longer than max_caption_len={c.max_caption_len} tokens and are skipped")
    if dropped > MAX_DROPPED_CAPTION_FRACTION * len(lengths):
      raise DataError(
          f"{dropped} of {len(lengths)} {split} captions in {self.data_dir} "
          f"({100 * dropped / len(lengths):.1f}%) are longer than max_caption_len="
          f"{c.max_caption_len} tokens (<eos> included) and would be skipped; the limit is "
          f"{100 * MAX_DROPPED_CAPTION_FRACTION:g}%: set --max_caption_len {int(lengths.max())}"
          " to keep them all")
    return dropped

  def _build(self, config: Config, strategy_name: str):
    """Model, optimizer, checkpoint and step functions (under the run's precision policy)."""
    run_dir = self.run_dir
    tf.keras.utils.set_random_seed(config.seed)  # python, numpy, TF and Keras initialisers
    with self.strategy.scope():
      self.model = model_lib.build(config, len(self.vocab))
      self.learning_rate = (LinearWarmup(config.learning_rate, config.warmup_steps)
                            if config.warmup_steps else config.learning_rate)
      self.optimizer = OPTIMIZERS[config.optimizer](self.learning_rate)
      if config.mixed_precision == "mixed_float16":
        # float16 gradients underflow without a loss scale; the optimizer adapts it, and skips
        # the update of a step whose scaled gradients overflowed.
        self.optimizer = tf.keras.mixed_precision.LossScaleOptimizer(self.optimizer)
      self.optimizer.build(self.model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.rng = tf.random.Generator.from_seed(config.seed)
      self.nonfinite_skipped = tf.Variable(0, dtype=tf.int64, trainable=False)
      # Training time so far, checkpointed: max_train_minutes bounds the whole run, not one start.
      self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
      self.average = (WeightAverage(self.model.trainable_variables, config.ema_decay)
                      if config.ema_decay else None)

    # A resumed run continues the same data stream: the checkpoint holds the data iterator where
    # tf.distribute can save it; under multi_worker, or mirrored over several devices (its
    # iterator is not trackable), it cannot, and the seeded, deterministic stream is instead
    # skipped forward by the number of batches already trained on.
    iterator = (iter(self._dataset(self.train_files, train=True))
                if strategy_name != "multi_worker" else None)
    self.iterator_in_checkpoint = isinstance(iterator, tf.__internal__.tracking.Trackable)
    tracked = dict(model=self.model, optimizer=self.optimizer, step=self.step, rng=self.rng,
                   nonfinite_skipped=self.nonfinite_skipped, train_seconds=self.train_seconds)
    if self.iterator_in_checkpoint:
      self.train_iterator = iterator
      tracked["train_iterator"] = self.train_iterator
    if self.average:
      tracked[AVERAGE_KEY] = self.average.averages
    self.tracked = tracked
    self.checkpoint = tf.train.Checkpoint(**tracked)
    checkpoint_dir = self.checkpoint_dir = os.path.join(run_dir, "checkpoints")
    if not self.chief:  # other workers write to a scratch copy that is thrown away
      checkpoint_dir = os.path.join(run_dir, f"worker_tmp_{os.getpid()}")
    self.manager = tf.train.CheckpointManager(self.checkpoint, checkpoint_dir,
                                              max_to_keep=config.keep_checkpoints)
    self._build_step_functions()
    self.writers = {}
    if self.chief:
      self.writers = {name: tf.summary.create_file_writer(os.path.join(run_dir, name))
                      for name in ("train", "validation")}

  def _dataset(self, files: List[str], train: bool, skip_batches: int = 0, repeat: bool = False):
    c = self.config
    ds = tfrecords.make_dataset(files, c.batch_size, c.image_side, c.max_caption_len,
                                shuffle=train, repeat=train or repeat, seed=c.seed,
                                shuffle_buffer=c.shuffle_buffer, skip_batches=skip_batches,
                                with_boxes=c.attention_supervision > 0 if train
                                else self.attention_words)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return self.strategy.experimental_distribute_dataset(ds.with_options(options))

  # --- the step functions ---------------------------------------------------------------------

  def _build_step_functions(self):
    c = self.config
    model, optimizer, strategy = self.model, self.optimizer, self.strategy
    average, step_counter = self.average, self.step

    def per_example_nll(batch, logits):
      return model_lib.sequence_loss(logits, batch["image"], c.num_pixels, per_image=True)

    def nlls_under_captions(batch, captions, training, alignments=False):
      """(per-image NLL of the batch's images under each (caption_ids, caption_len) of
      ``captions``, log alpha [batch, pixels, words] under the first captions or None): all
      copies go through the model as one batch (the pixel loop's cost hardly grows with the
      batch, and it is traced once); ``alignments`` takes the fast loop for alpha."""
      every = {key: tf.concat([value] * len(captions), axis=0) for key, value in batch.items()
               if not key.startswith("caption")}
      every.update(caption_ids=tf.concat([ids for ids, _ in captions], 0),
                   caption_len=tf.concat([lengths for _, lengths in captions], 0))
      log_alpha = None
      if alignments:
        logits, log_alpha = model.logits_and_alignments(every)
        log_alpha = log_alpha[:tf.shape(batch["caption_len"])[0]]
      else:
        logits = model(every, training=training)
      return tf.split(per_example_nll(every, logits), len(captions)), log_alpha

    loss_scaled = c.mixed_precision == "mixed_float16"

    order_words = tf.constant(self.order_words, tf.int32)

    def objective(batch):
      """(per-image NLL in nats per pixel, what training minimises per image): the NLL, plus
      with order_contrast its term, for which the batch and its copy with a negative caption go
      through the model as one batch, plus with attention_supervision its term on the batch's
      own captions."""
      captions = [(batch["caption_ids"], batch["caption_len"])]
      if c.order_contrast:
        if c.order_negatives == "swap":
          negative_ids, eligible = text_lib.swap_two_words(batch["caption_ids"], order_words,
                                                           self.order_forbidden)
        else:
          replica = tf.distribute.get_replica_context().replica_id_in_sync_group
          negative_ids, eligible = text_lib.neighbour_of_two_words(
              batch["caption_ids"], order_words,
              replica_draws(tf.shape(batch["caption_len"])[0], 3, c.seed + NEIGHBOUR_SALT,
                            step_counter, replica, c.batch_size), self.order_forbidden)
        captions.append((negative_ids, batch["caption_len"]))
      nlls, log_alpha = nlls_under_captions(batch, captions, training=True,
                                            alignments=c.attention_supervision > 0)
      nll, minimised = nlls[0], nlls[0]
      if c.order_contrast:
        margin = (nlls[1] - nll) * c.num_pixels  # log p(x|y) - log p(x|y negative), nats
        contrast = tf.where(eligible, tf.nn.softplus(-margin), tf.zeros_like(margin))
        minimised += c.order_contrast * contrast / c.num_pixels
      if c.attention_supervision:
        minimised += c.attention_supervision * attention_supervision_term(c, batch, log_alpha,
                                                                          order_words)
      return nll, minimised

    def loss_and_gradients(batch):
      with tf.GradientTape() as tape:
        per_example, minimised = objective(batch)
        # The reported loss stays the likelihood's (bits/dim comparable across variants).
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=c.batch_size)
        total = tf.nn.compute_average_loss(minimised, global_batch_size=c.batch_size)
        scaled = optimizer.get_scaled_loss(total) if loss_scaled else total
      grads = tape.gradient(scaled, model.trainable_variables)
      return loss, optimizer.get_unscaled_gradients(grads) if loss_scaled else grads

    if c.jit_compile:  # XLA for forward and backward; the all-reduce and update stay outside
      loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True)

    def replica_train_step(batch):
      if c.caption_dropout:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        batch = drop_captions(batch, c.caption_dropout, c.seed, step_counter, replica,
                              c.batch_size)
      loss, grads = loss_and_gradients(batch)
      # Sum over replicas first, then clip: the same update as one device with the whole batch.
      context = tf.distribute.get_replica_context()
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      grads, norm = tf.clip_by_global_norm(grads, c.clip_norm)
      finite = tf.math.is_finite(norm) & tf.math.is_finite(context.all_reduce("sum", loss))
      # No tf.cond around apply_gradients: a synchronisation point inside control flow is not
      # supported under MultiWorkerMirroredStrategy. A non-finite step applies zero gradients
      # instead: weights stay as they were (RMSProp's running average decays by one step).
      if not loss_scaled:  # (the loss-scale optimizer needs the overflow to see it)
        grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
      optimizer.apply_gradients(zip(grads, model.trainable_variables),
                                skip_gradients_aggregation=True)
      if average:
        average.update(step_counter)
      applied = finite
      return loss, norm, applied

    # Without autograph (nothing to convert: see sampling.make_generate_fn); traced faster.
    @tf.function(autograph=False)
    def train_step(iterator):
      batch = next(iterator)
      loss, norm, applied = strategy.run(replica_train_step, args=(batch,))
      loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
      norm = strategy.experimental_local_results(norm)[0]
      applied = strategy.experimental_local_results(applied)[0]
      return loss, norm, applied

    @tf.function(autograph=False)
    def eval_step(batch):
      def replica(batch):
        # The same images under another image's caption (the batch's captions rolled by one):
        # how many nats per pixel the true caption is worth. Computed alike for every model,
        # so that it comes out 0 for one that ignores the caption rather than being set to 0.
        # With digit words (MNIST-with-captions), also under the caption with its two digits
        # swapped: whether the model knows which digit goes where (pairs fail without it).
        ids, lengths = batch["caption_ids"], batch["caption_len"]
        captions = [(ids, lengths), (tf.roll(ids, 1, axis=0), tf.roll(lengths, 1, axis=0))]
        if self.order_words:
          swapped_ids, eligible = text_lib.swap_two_words(ids, order_words)
          captions.append((swapped_ids, lengths))
        nlls, log_alpha = nlls_under_captions(batch, captions, training=False,
                                              alignments=self.attention_words)
        sums = {"nll": tf.reduce_sum(nlls[0]), "gain": tf.reduce_sum(nlls[1] - nlls[0]),
                "count": tf.cast(tf.shape(batch["image"])[0], tf.float32)}
        if self.attention_words:
          targets = attention_targets(ids, batch["boxes"], order_words, c.image_side,
                                      batch["image"])
          sums.update(attention_on_word=tf.reduce_sum(targets * tf.exp(log_alpha)),
                      attention_pixels=tf.reduce_sum(targets))
        if self.order_words:
          margin = (nlls[2] - nlls[0]) * c.num_pixels  # log p(x|y) - log p(x|y swapped), nats
          eligible = tf.cast(eligible, tf.float32)
          sums.update(order_preferred=tf.reduce_sum(eligible * tf.cast(margin > 0, tf.float32)),
                      order_margin=tf.reduce_sum(eligible * margin),
                      order_pairs=tf.reduce_sum(eligible))
        return sums
      sums = strategy.run(replica, args=(batch,))
      return {name: strategy.reduce("sum", x, axis=None) for name, x in sums.items()}

    def under_policy(function):  # traced (its layers made) under the run's precision policy
      def call(*args):
        with self._policy():
          return function(*args)
      return call
    self.objective = objective  # (eager; what the tests check against the model's likelihood)
    self.train_step = under_policy(train_step)
    self.eval_step = under_policy(eval_step)

  # --- checkpoints and resuming ---------------------------------------------------------------

  def restore(self) -> int:
    # Every worker restores the chief's checkpoint (the others only ever write scratch copies).
    latest = tf.train.latest_checkpoint(self.checkpoint_dir)
    if latest and self.average and not checkpoint_has(latest, AVERAGE_KEY):
      # ema_decay turned on for a run that had none: the average starts here.
      restore_checked(tf.train.Checkpoint(**{k: v for k, v in self.tracked.items()
                                             if k != AVERAGE_KEY}), latest)
      self.average.reset()
      self.log(f"resumed from {latest} at step {int(self.step.numpy())}; the weights' moving "
               f"average (ema_decay={self.config.ema_decay}) starts here")
    elif latest:
      restore_checked(self.checkpoint, latest)
      self.log(f"resumed from {latest} at step {int(self.step.numpy())}")
    elif self.init_from:
      self._warm_start(self.init_from)
    step = int(self.step.numpy())
    if not self.iterator_in_checkpoint:
      self.train_iterator = iter(self._dataset(self.train_files, train=True, skip_batches=step))
    return step

  def save(self) -> Optional[str]:
    path = self.manager.save(checkpoint_number=int(self.step.numpy()))
    if not self.chief:
      shutil.rmtree(self.manager.directory, ignore_errors=True)
    return path

  def _warm_start(self, source_run: str) -> None:
    """A new run's model weights from another run's latest checkpoint (its weights' average if
    it keeps one); optimizer, step and data start fresh (``warmup_steps`` eases the start). A
    source with a narrower pixel LSTM, attention layer or caption BiLSTM is widened into this
    run's model, computing the same function (text2pixel/widening.py)."""
    source_config, source_vocab, latest = layout.load_run_config(source_run)
    if source_vocab != self.vocab:
      raise TrainingError(f"--init_from {source_run} was trained on another vocabulary than "
                          f"{self.data_dir}'s: its word embeddings would mean other words")
    different = {k: v for k, v in source_config.differences(self.config).items()
                 if k in layout.MODEL_FIELDS and k not in widening.WIDENABLE_FIELDS}
    if different:
      raise TrainingError(f"--init_from {source_run} is a model of another shape (" + "; ".join(
          f"{k}: it has {a!r}, this run {b!r}" for k, (a, b) in different.items()) + ")")
    if not latest:
      raise TrainingError(f"--init_from {source_run} has no checkpoint")
    try:
      grown = widening.widening(source_config, self.config)
      if grown:  # the narrower model's function, with new units that start switched off
        # (the graph loop: building it compiles no kernel this run may not use)
        source_model = model_lib.build(source_config.replace(pixel_loop="graph"),
                                       len(self.vocab))
        restore_model(source_model, source_config, latest)
        widening.widen_into(source_model, self.model)
    except ConfigError as error:
      raise TrainingError(f"--init_from {source_run}: {error}") from None
    if grown:
      self.log("widened " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in grown.items()) +
               " (text2pixel/widening.py: the same function; the new units start switched off)")
    else:
      restore_model(self.model, source_config, latest)
    if self.average:
      self.average.reset()
    if self.chief:  # where from exactly, so that a learning curve can follow the runs' lineage
      # (init_from too: a first attempt that died before its first checkpoint may have named
      # another source or none)
      layout.write_run_info(self.run_dir, {**layout.read_run_info(self.run_dir),
                                           "init_from": os.path.abspath(source_run),
                                           "init_checkpoint": os.path.abspath(latest),
                                           **({"widened": {k: list(v) for k, v in grown.items()}}
                                              if grown else {})})
    self.log(f"started from the weights of {latest}; optimizer state and data position are new"
             + (f", the learning rate warms up over {self.config.warmup_steps} steps"
                if self.config.warmup_steps else ""))
    if source_config.seed == self.config.seed:
      self.log(f"note: --seed {self.config.seed} is the source run's, so on the same data at "
               f"the same batch size this run's batches, caption dropout and order-term draws "
               f"repeat the source's from its step 0; give another --seed for another order")

  def current_learning_rate(self) -> float:
    if isinstance(self.learning_rate, LinearWarmup):
      return float(self.learning_rate(self.optimizer.iterations))
    return float(self.learning_rate)

  def _install_signal_handlers(self):
    def request_stop(signum, _frame):
      self.log(f"received signal {signum}: saving a checkpoint and stopping")
      self.stop_requested = True
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        signal.signal(sig, request_stop)
      except ValueError:  # not the main thread (e.g. inside a test runner thread)
        pass

  # --- validation -----------------------------------------------------------------------------

  def shown_weights(self):
    """The weights validation, samples and exports show: the moving average if the run keeps
    one, else the weights as trained."""
    return self.average.swapped_in() if self.average else contextlib.nullcontext()

  def evaluate(self, max_batches: Optional[int] = None) -> Dict[str, float]:
    """Mean validation NLL (of the shown weights); with max_batches, exactly that many batches
    of a repeated stream, so that under multi_worker every worker runs the same number of
    collective steps."""
    with self._policy(), self.shown_weights():
      return self._evaluate(max_batches)

  def _evaluate(self, max_batches: Optional[int]) -> Dict[str, float]:
    ds = self._dataset(self.validation_files, train=False, repeat=max_batches is not None)
    sums = collections.Counter()
    for i, batch in enumerate(tfrecords.iterate(ds, self.validation_files)):
      if max_batches is not None and i >= max_batches:
        break
      sums.update({name: float(x) for name, x in self.eval_step(batch).items()})
    if not sums["count"]:
      raise TrainingError("the validation split has fewer examples than one batch")
    nats = sums["nll"] / sums["count"]
    # In bits per image: a model that draws the named digits knows a few bits more than one
    # that ignores the caption (log2 of 10 per digit); early on this is the first sign of it.
    caption_bits = float(metrics_lib.nats_to_bits(
        sums["gain"] / sums["count"] * self.config.num_pixels))
    metrics = {"loss": nats, "bits_per_dim": float(metrics_lib.nats_to_bits(nats)),
               "caption_gain_bits_per_image": caption_bits}
    if sums["order_pairs"]:
      # Share of validation images of two different digits whose true caption scores higher
      # than the one with the digits swapped (50% = the order is a guess), and the mean margin.
      metrics.update(order_preference=sums["order_preferred"] / sums["order_pairs"],
                     order_margin_nats=sums["order_margin"] / sums["order_pairs"],
                     order_pairs=sums["order_pairs"])
    if sums["attention_pixels"]:
      # Mean attention a stroke pixel inside one named digit's box gives that digit's word.
      metrics["attention_on_digit_word"] = sums["attention_on_word"] / sums["attention_pixels"]
    return metrics

  def validate(self, step: int) -> Dict[str, float]:
    """Validation NLL and caption gain, and on the chief the digit judge's accuracy on samples
    (what users judge the model by); logged, and written to TensorBoard's validation/."""
    c = self.config
    metrics = self.evaluate(c.eval_batches)
    line = (f"step {step}: validation {metrics['bits_per_dim']:.3f} bits/dim, the caption is "
            f"worth {metrics['caption_gain_bits_per_image']:.1f} bits per image")
    if "order_preference" in metrics:
      line += (f", true over digit-swapped caption for {metrics['order_preference']:.1%} of "
               f"{metrics['order_pairs']:.0f} two-digit images")
    if "attention_on_digit_word" in metrics:
      line += (f", a digit's strokes attend {metrics['attention_on_digit_word']:.1%} to its "
               "word")
    probe = self._judge_probe()
    if probe is not None:
      started = time.time()
      with self._policy(), self.shown_weights():
        metrics.update(probe())
      seconds = time.time() - started
      line += (f"; judge: {metrics['judge_accuracy']:.1%} of samples right for validation "
               f"captions, {metrics['judge_accuracy_heldout']:.1%} for held-out ones "
               f"({probe.num_images} samples, {seconds:.0f} s)")
      metrics["judge_seconds"] = seconds
    self._scalars("validation", step, metrics)
    self.log(line)
    return metrics

  def _judge_probe(self) -> Optional[judge_lib.CaptionJudgeProbe]:
    """The digit judge's probe, made at the first validation; None where the run cannot be
    judged (the reason is logged once) and on workers other than the chief."""
    if not hasattr(self, "_probe"):
      self._probe = None
      reason = judge_lib.CaptionJudgeProbe.unavailable(self.config, self.data_dir)
      if reason:
        self.log(f"digit judge: {reason}")
      elif self.chief:
        with precision_policy("float32"):  # the judge's own layers stay float32
          judge = judge_lib.load_or_train_judge(log=self.log)
        c = self.config
        self._probe = judge_lib.CaptionJudgeProbe(judge, self.model, self.data_dir,
                                                  c.judge_captions, c.judge_samples, c.seed)
    return self._probe

  # --- the loop -------------------------------------------------------------------------------

  def train(self) -> Dict[str, float]:
    with self._policy():
      return self._train()

  def _train(self) -> Dict[str, float]:
    c = self.config
    start_step = self.restore()
    self._install_signal_handlers()
    budget = c.max_train_minutes * 60 if c.max_train_minutes else float("inf")
    if start_step >= c.train_steps or self.train_seconds.numpy() >= budget:
      self.log(f"run already at step {start_step} after {self.train_seconds.numpy() / 60:.1f} min "
               f"(train_steps={c.train_steps}, max_train_minutes={c.max_train_minutes}); "
               "nothing to do")
      return {"step": start_step, **self.evaluate(c.eval_batches)}
    self.log(f"training {c.train_steps - start_step} steps on {self.strategy.num_replicas_in_sync}"
             f" replica(s); global batch {c.batch_size}, {c.num_pixels} pixels per image")
    clock = _Clock(time.time(), float(self.train_seconds.numpy()), budget)
    window, last = _ProgressWindow(), {}
    validated = (None, {})  # (step, metrics) of the latest validation
    self._consecutive_nonfinite = 0
    while int(self.step.numpy()) < c.train_steps and not self.stop_requested:
      step, loss, norm, applied = self._run_step(clock)
      window.steps += 1
      # A step whose update was not applied still counts (its batch is used up), and goes on to
      # the checkpoint, validation and time-bound checks below like any other.
      if self._check_update(step, loss, norm, applied):
        window.losses.append(loss)
      if step % c.log_every == 0 or step == c.train_steps:
        last = self._log_progress(step, start_step, float(norm), window, clock)
        window = _ProgressWindow()
      if step % c.checkpoint_every == 0:
        self.save()
      if step % c.eval_every == 0:
        validated = (step, self.validate(step))
      if step % c.sample_every == 0 and self.chief:
        self.write_samples(step)
      if self.train_seconds.numpy() >= budget:
        self.log(f"time bound of {c.max_train_minutes} min reached at step {step}")
        break
    return self._finish(last, validated)

  def _run_step(self, clock: "_Clock"):
    """One train step: (step number, loss, gradient norm, whether the update was applied)."""
    try:
      loss, norm, applied = self.train_step(self.train_iterator)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError):
      bad = tfrecords.find_corrupt_files(self.train_files)
      if bad:
        raise tfrecords.DataError(f"corrupt or truncated TFRecord file(s): {', '.join(bad)}")
      raise
    step = int(self.step.assign_add(1).numpy())
    self.train_seconds.assign(clock.seconds_before + time.time() - clock.started)
    return step, float(loss), norm, bool(applied)

  def _check_update(self, step: int, loss: float, norm, applied: bool) -> bool:
    """Whether the step trained; a float16 overflow is logged, a non-finite step stops the run
    (--nonfinite=stop) or is skipped and counted, up to max_consecutive_nonfinite in a row."""
    c = self.config
    if applied:
      self._consecutive_nonfinite = 0
      return True
    if c.mixed_precision == "mixed_float16" and np.isfinite(loss):
      self.log(f"step {step}: float16 gradients overflowed; update skipped, loss scale now "
               f"{float(self.optimizer.loss_scale):g}")
      return False
    if c.nonfinite == "stop":
      self.step.assign_sub(1)
      raise TrainingError(
          f"non-finite loss ({loss}) or gradient norm ({float(norm)}) at step {step}; the "
          f"last good checkpoint is kept in {self.manager.directory} (use --nonfinite=skip "
          "to skip such batches instead)")
    self._consecutive_nonfinite += 1
    in_a_row = self._consecutive_nonfinite
    self.nonfinite_skipped.assign_add(1)
    self.log(f"step {step}: non-finite loss or gradient; batch skipped ({in_a_row}"
             f" in a row, {int(self.nonfinite_skipped.numpy())} in all)")
    if in_a_row >= c.max_consecutive_nonfinite:
      raise TrainingError(
          f"{in_a_row} consecutive steps had a non-finite loss or gradient "
          f"(steps {step - in_a_row + 1}-{step}, max_consecutive_nonfinite="
          f"{c.max_consecutive_nonfinite}): the run is not recovering; skipped steps leave "
          f"the weights unchanged, and the latest checkpoint is in {self.manager.directory}")
    return False

  def _log_progress(self, step: int, start_step: int, norm: float, window: "_ProgressWindow",
                    clock: "_Clock") -> Dict[str, float]:
    """The progress line and train/ summaries for the steps since the last line."""
    c = self.config
    steps_per_sec = window.steps / max(time.time() - window.started, 1e-9)
    pixels_per_sec = steps_per_sec * c.batch_size * c.num_pixels
    mean_loss = float(np.mean(window.losses)) if window.losses else float("nan")
    eta = min((c.train_steps - step) / max(steps_per_sec, 1e-9),
              clock.budget - float(self.train_seconds.numpy()))
    self.log(f"step {step}/{c.train_steps} loss {mean_loss:.4f} nats/px "
             f"({metrics_lib.nats_to_bits(mean_loss):.3f} bits/dim) | "
             f"{steps_per_sec:.2f} steps/s, {pixels_per_sec:,.0f} px/s | ETA {_minutes(eta)}")
    self._scalars("train", step, {
        "loss": mean_loss, "bits_per_dim": metrics_lib.nats_to_bits(mean_loss),
        "learning_rate": self.current_learning_rate(),
        "gradient_norm": norm, "steps_per_sec": steps_per_sec, "pixels_per_sec": pixels_per_sec,
        "nonfinite_skipped": float(self.nonfinite_skipped.numpy())})
    return {"train_loss": mean_loss, "steps_per_sec": steps_per_sec, "done": step - start_step}

  def _finish(self, last: Dict[str, float], validated) -> Dict[str, float]:
    """The final checkpoint, validation (unless the last step had one), sample grid and
    train_result.json."""
    c = self.config
    self.save()
    step = int(self.step.numpy())
    metrics = validated[1] if validated[0] == step else self.validate(step)
    # A last grid where the run ended between two grids; none for a run asked to be shorter
    # than sample_every (it asked for no grids: tests, quick checks).
    if self.chief and step % c.sample_every and c.sample_every <= c.train_steps:
      self.write_samples(step)
    result = {"step": step, "minutes": float(self.train_seconds.numpy()) / 60, **last,
              "validation_bits_per_dim": metrics["bits_per_dim"],
              "captions_dropped_as_too_long": self.dropped_captions,
              "caption_gain_bits_per_image": metrics["caption_gain_bits_per_image"],
              **{k: metrics[k] for k in JUDGE_METRICS if k in metrics}}
    self.log(f"stopped at step {step}; checkpoint in {self.manager.directory}")
    if self.chief:
      atomic.write_json(os.path.join(self.run_dir, "train_result.json"), result, indent=2)
    return result

  # --- summaries and pictures -----------------------------------------------------------------

  def _scalars(self, writer: str, step: int, values: Dict[str, float]):
    if writer not in self.writers:
      return
    with self.writers[writer].as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    self.writers[writer].flush()

  def write_samples(self, step: int):
    """Samples for fixed validation captions, as a grid and attention pictures (TensorBoard)."""
    with self._policy(), self.shown_weights():
      return self._write_samples(step)

  def _write_samples(self, step: int):
    c = self.config
    examples = tfrecords.load_split(self.data_dir, "validation", c.image_side,
                                    limit=c.num_sample_captions)
    ids = tfrecords.pad_ids(list(examples["caption_ids"]), c.max_caption_len)
    lengths = np.array([len(x) for x in examples["caption_ids"]], np.int32)
    if not hasattr(self, "_sample_fn"):  # traced once, reused at every sample_every
      self._sample_fn = sampling.make_generate_fn(self.model, "sample", num_samples=4)
    out = self._sample_fn(tf.constant(ids), tf.constant(lengths), tf.constant(1.0),
                          tf.constant(step % (2 ** 31 - 1), tf.int32))
    captions = [x.decode() for x in examples["caption"]]
    grid = np.concatenate([examples["image"][:, None], out["images"].numpy()], axis=1)
    picture = pictures.caption_grid(grid, [f"{cap}   (left: data, then 4 samples)"
                                           for cap in captions], scale=max(1, 64 // c.image_side))
    path = pictures.save(picture, os.path.join(self.run_dir, "samples", f"step{step:07d}.png"))
    summaries = {"samples": pictures.to_summary_image(picture)}
    if self.model.conditioning.attends:
      words = [self.vocab.decode([i]) or "<eos>" for i in ids[0][:lengths[0]]]
      att = pictures.attention_picture(out["images"].numpy()[0, 0],
                                       out["attention"].numpy()[0, 0][:, :lengths[0]], words,
                                       captions[0], scale=max(1, 64 // c.image_side))
      pictures.save(att, os.path.join(self.run_dir, "samples", f"step{step:07d}_attention.png"))
      summaries["attention"] = pictures.to_summary_image(att)
    with self.writers["train"].as_default(step=step):
      for name, image in summaries.items():
        tf.summary.image(name, image)
    self.writers["train"].flush()
    return path


def digit_word_ids(vocab: text_lib.Vocabulary) -> Dict[int, int]:
  """{digit: vocabulary id} of the words "0" ... "9" it holds (what order_contrast swaps)."""
  return {d: vocab.words.index(str(d)) for d in range(10) if str(d) in vocab.words}


def attention_targets(caption_ids, boxes, digit_words, image_side: int,
                      images: Optional[tf.Tensor] = None, blank: bool = False) -> tf.Tensor:
  """Which word each pixel's attention should hold (Config.attention_supervision), as weights
  [batch, pixels, words]: 1 at (pixel j, the word naming digit k) for every pixel inside digit
  k's box and no other digit's, 0 elsewhere; with ``images`` only for pixels that hold ink
  (>= judge.INK_FLOOR), i.e. the digit's strokes. With ``blank`` (and ``images``) the other
  way round: the blank pixels of digit k's box, at the *other* digit's word (two-digit captions
  only): the word attention_supervised_pixels="ink_away" keeps them from.

  ``boxes`` [batch, 8]: up to two (row0, col0, row1, col1) on the stored 32x32 image, ends
  exclusive, zeros for a missing digit (tfrecords.make_dataset(with_boxes=True)); scaled to
  ``image_side`` outward. The records list digits and boxes in caption order, so the first digit
  word names the first box. A caption whose number of digit words is not its number of boxes
  (the empty caption of caption dropout) gets no weights.
  """
  if blank and images is None:
    raise ValueError("blank pixels are told apart from strokes by the images: pass them")
  count, first, last, _, _ = text_lib.two_word_slots(caption_ids, digit_words)
  boxes = tf.reshape(tf.cast(boxes, tf.int32), [-1, tfrecords.MAX_DIGITS, 4])
  factor = tfrecords.STORED_SIDE // image_side
  starts, ends = boxes[..., :2] // factor, -(-boxes[..., 2:] // factor)        # [batch, 2, 2]
  has_box = tf.reduce_all(ends > starts, axis=-1)                              # [batch, 2]
  pixel = tf.range(image_side * image_side)
  rows, cols = pixel // image_side, pixel % image_side
  inside = ((rows >= starts[..., :1]) & (rows < ends[..., :1]) &
            (cols >= starts[..., 1:]) & (cols < ends[..., 1:]) & has_box[..., None])  # [b, 2, px]
  alone = inside & ~tf.reverse(inside, axis=[1])  # in this digit's box and not the other's
  if images is not None:
    stroke = tf.reshape(tf.cast(images, tf.int32), [-1, image_side * image_side])
    ink = (stroke >= judge_lib.INK_FLOOR)[:, None, :]
    alone &= ~ink if blank else ink
  valid = (count == tf.reduce_sum(tf.cast(has_box, tf.int32), axis=1)) & (count > 0)
  words = tf.one_hot(tf.stack([first, last], axis=1), tf.shape(caption_ids)[1])  # [b, 2, words]
  if blank:  # box k's weight goes to the other digit's word
    words = tf.reverse(words, axis=[1])
    valid &= count == 2
  targets = tf.einsum("bkp,bkw->bpw", tf.cast(alone, tf.float32), words)
  return targets * tf.cast(valid, tf.float32)[:, None, None]


def attention_supervision_term(config: Config, batch, log_alpha, digit_words) -> tf.Tensor:
  """Config.attention_supervision's term per image (before its weight), in nats per pixel:
  -sum_j log alpha_{j, own word} over the supervised pixels (attention_targets), and with
  "ink_away" also -sum_j log(1 - alpha_{j, other digit's word}) over each box's blank pixels.
  ``log_alpha`` [batch, pixels, words]: the batch's rows of model.logits_and_alignments."""
  pixels = config.attention_supervised_pixels
  images = None if pixels == "box" else batch["image"]
  targets = attention_targets(batch["caption_ids"], batch["boxes"], digit_words,
                              config.image_side, images)
  term = -tf.reduce_sum(targets * log_alpha, axis=[1, 2])
  if pixels == "ink_away":
    away = attention_targets(batch["caption_ids"], batch["boxes"], digit_words,
                             config.image_side, images, blank=True)
    # log of the attention left for every word but the other digit's, without forming 1 - alpha
    rest = tf.reduce_logsumexp(log_alpha - 1e9 * away, axis=-1)
    term -= tf.reduce_sum(tf.reduce_sum(away, axis=-1) * rest, axis=1)
  return term / config.num_pixels


# Keeps the neighbour captions' draws apart from caption dropout's, which use the run's seed.
NEIGHBOUR_SALT = 0x5EED


def replica_draws(local, width, seed, step, replica=0, global_batch=None):
  """[local, width] uniform draws for replica ``replica``'s slice of the global batch, keyed by
  ``seed`` and the step: a resumed run draws the same as an uninterrupted one, and mirrored
  replicas the same as one device."""
  draws = tf.random.stateless_uniform(
      [global_batch or local, width], seed=tf.stack([tf.constant(seed, tf.int64),
                                                     tf.cast(step, tf.int64)]))
  return tf.slice(draws, [tf.cast(replica, tf.int32) * local, 0], [local, width])


def drop_captions(batch: Dict[str, tf.Tensor], rate: float, seed: int, step, replica=0,
                  global_batch: Optional[int] = None) -> Dict[str, tf.Tensor]:
  """The batch with each caption replaced by the empty one (<eos> alone) with probability
  ``rate`` (Config.caption_dropout). One draw per example of the global batch, keyed by the
  run's seed and the step, of which replica r takes its slice: a resumed run drops the same
  captions as an uninterrupted one, and mirrored replicas the same as one device."""
  ids, lengths = batch["caption_ids"], batch["caption_len"]
  drop = replica_draws(tf.shape(lengths)[0], 1, seed, step, replica, global_batch)[:, 0] < rate
  empty_ids, empty_lengths = text_lib.empty_captions(ids)
  return dict(batch, caption_ids=tf.where(drop[:, None], empty_ids, ids),
              caption_len=tf.where(drop, tf.cast(empty_lengths, lengths.dtype), lengths))


def _minutes(seconds: float) -> str:
  seconds = max(0, int(seconds))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def load_run(run_dir: str):
  """(config, vocabulary, model restored from the latest checkpoint) of a training run; the
  model holds the weights' moving average where the run keeps one (restore_model)."""
  config, vocab, latest = layout.load_trained_run_config(run_dir)
  model = model_lib.build(config, len(vocab))
  restore_model(model, config, latest)
  diverged = [v.name for v in model.weights if not np.all(np.isfinite(v.numpy()))]
  if diverged:  # sampling from NaN logits fails deep inside the decoder, far from the cause
    raise CheckpointError(f"{latest} holds non-finite weights ({', '.join(diverged[:3])}"
                          f"{', ...' if len(diverged) > 3 else ''}): the run diverged before this "
                          "checkpoint; train on from an earlier one (delete the later ones)")
  return config, vocab, model


def restore_checked(checkpoint: tf.train.Checkpoint, path: str, partial: bool = False):
  """Restores ``path``; every weight of the model must come from it (a checkpoint of another
  model layout must fail loudly, not leave freshly initialised weights behind)."""
  def mismatch(error):
    # The half-done restore logs a warning per unmatched value when it is garbage-collected;
    # the one error line below says all of it.
    tf.get_logger().setLevel("ERROR")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    return CheckpointError(f"{path} does not fit this model: it was written by another model "
                         f"layout or config ({str(error).splitlines()[0][:300]})")
  try:
    status = checkpoint.restore(path)
  except ValueError as error:  # a weight of another shape
    raise mismatch(error) from None
  if partial:  # the checkpoint may hold more (optimizer, iterator) than is asked for here
    status.expect_partial()
  try:
    status.assert_existing_objects_matched()
  except AssertionError as error:
    status.expect_partial()
    raise mismatch(error) from None
