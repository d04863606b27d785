"""alignPixelRNN: the paper's model, with its equations named where they are computed.

Encoder (section 4.1): caption words y_1..y_N -> word embedding -> bidirectional LSTM; the
annotation vectors are h^lang_i = [forward h_i ; backward h_i].

Decoder (section 4.2): a pixel LSTM over the image in raster order,
  eq. 6   h^pix_j = f(h^pix_{j-1}, x_{j-1}, c^lang_j)
  eq. 7   c^lang_j = sum_i alpha_ji h^lang_i
  eq. 8   alpha_ji = softmax_i(e_ji)
  eq. 9   e_ji = a(h^pix, h^lang_i)          (Luong's multiplicative score, as the paper says)
  eq. 5   p(x_j | x_<j, y) = softmax(W_out a_j),  a_j = tanh(W_c [h^pix_j ; c^lang_j])
and eq. 1 / 5: log p(x | y) = sum_j log p(x_j | x_<j, y), the exact likelihood used for ranking.

These are exactly `tfa.seq2seq.AttentionWrapper(PixelLSTMCell, LuongAttention)`: the wrapper
feeds the previous attention vector a_{j-1} with the pixel input (Luong's input feeding), runs the
LSTM (eq. 6), scores the annotations with LuongAttention (eq. 9), normalises them (eq. 8), takes
the context (eq. 7) and the attention vector a_j. Luong scores with the current LSTM state rather
than h^pix_{j-1}; the paper names Luong attention explicitly, so we follow Luong.

Teacher forcing for training computes the same function faster than
running that cell step by step (:meth:`AlignPixelRNN.logits_stepwise`, kept as the reference the
tests compare against): the input part of the LSTM pre-activations for all pixels before the
loop, and the gradients of W_rec and W_c as one matrix product each after it, instead of
per-step outer products summed inside the backward loop (experiments/NOTEBOOK.md, "Benchmarks").
Under mixed precision the LSTM gates and cell state, eqs. 7-9 and the softmax of eq. 5 stay
float32; the matrix products run in the compute dtype.

Baselines (for the paper's alignDRAW vs noalignDRAW comparison): ``conditioning="mean"`` feeds
the mean of the annotation vectors at every step instead of attending; ``"none"`` is an
unconditional pixel LSTM.
"""

from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tensorflow_addons as tfa

from text2pixel.config import Config

START_SYMBOL = 256  # id of the "previous pixel" before the first pixel (pixels are 0..255)


class PixelLSTMCell(tf.keras.layers.AbstractRNNCell):
  """The pixel LSTM of eq. 6, optionally told where it is and what lies above it.

  Its input is [a_{j-1} ; features_j] and its gate pre-activation is
      z_j = features_j W_in + [a_{j-1} ; h^pix_{j-1}] W_rec + b,
  the standard LSTM (Keras' gate order i, f, c, o) with its kernel split by rows: W_in sees only
  what is known before the loop (the previous pixel's embedding, position, pixels above, the mean
  context), W_rec what needs the recurrence. The split changes nothing that is computed; it lets
  teacher forcing (:meth:`AlignPixelRNN.logits_from_annotations`) apply W_in to all pixels at
  once, outside the loop.

  Two optional, causal extensions (both off in the ``paper`` preset):
  * ``position_embedding_dim`` > 0: a learned row and column embedding joins the input, so the
    LSTM need not count steps to know where in the raster it is;
  * ``above_context`` = k > 0: the embeddings of the k pixels centred above the current one (the
    row above, already generated) join the input, like the input-to-state convolution over the
    previous row of section 3.1 (eq. 2). A 1-D raster LSTM otherwise has to carry a pixel 32 steps
    to use it in the next row.
  The state carries the step index, a shift register of the last ``side + k // 2`` pixel ids and a
  constant context vector (the ``mean`` baseline), so every tfa decoder (greedy, sampling, beam
  search) runs this cell unchanged. The previous pixel's id arrives as the input's last channel.
  """

  def __init__(self, units: int, image_side: int, pixel_embedding_dim: int,
               attention_dim: int = 0, position_embedding_dim: int = 0, above_context: int = 0,
               context_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.image_side = image_side
    self.pixel_embedding_dim = pixel_embedding_dim
    self.attention_dim = attention_dim
    self.position_embedding_dim = position_embedding_dim
    self.above_context = above_context
    self.context_dim = context_dim
    self.history = image_side + above_context // 2 if above_context else 1
    if position_embedding_dim:
      self.row_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="row_embedding")
      self.col_embedding = tf.keras.layers.Embedding(image_side, position_embedding_dim,
                                                     name="col_embedding")
    if above_context:
      self.above_embedding = tf.keras.layers.Embedding(257, pixel_embedding_dim,
                                                       name="above_embedding")
    for name in ("row_embedding", "col_embedding", "above_embedding"):
      if hasattr(self, name):  # built now: teacher forcing reads their matrices
        getattr(self, name).build((None,))
    # Rows of W_in, in this order: previous pixel, row, column, each pixel above, context.
    self.feature_sizes = ([pixel_embedding_dim] +
                          [position_embedding_dim] * (2 if position_embedding_dim else 0) +
                          [pixel_embedding_dim] * above_context +
                          [context_dim] * (1 if context_dim else 0))
    gates = 4 * units
    self.input_kernel = self.add_weight("input_kernel", [sum(self.feature_sizes), gates],
                                        initializer="glorot_uniform")
    self.recurrent_kernel = self.add_weight(
        "recurrent_kernel", [attention_dim + units, gates],
        initializer=_AttentionAndRecurrentInitializer(attention_dim))
    self.bias = self.add_weight("bias", [gates], initializer=_unit_forget_bias)
    self.built = True

  @property
  def state_size(self):
    # [h, c, step, recent pixel ids, context]; all float so Keras' RNN treats them alike.
    return [self.units, self.units, 1, self.history, max(self.context_dim, 1)]

  @property
  def output_size(self):
    return self.units

  def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
    dtype = dtype or tf.float32
    zeros = lambda n: tf.zeros([batch_size, n], dtype)
    # c, the step index and the pixel ids are float32 whatever the compute dtype: bfloat16 counts
    # exactly only up to 256, so a bfloat16 step index would stop at pixel 256.
    return [zeros(self.units), tf.zeros([batch_size, self.units], tf.float32),
            tf.zeros([batch_size, 1], tf.float32),
            tf.fill([batch_size, self.history], tf.cast(START_SYMBOL, tf.float32)),
            zeros(max(self.context_dim, 1))]

  def lstm_update(self, z, c):
    """h_j, c_j from the gate pre-activations z_j and c_{j-1} (the LSTM of eq. 6).

    The gates and the cell state are float32 even under mixed precision: c_j sums 1024 small
    updates, and in bfloat16 (8 bits of mantissa) they get lost. Only h_j, which feeds the
    matrix products, is cast to the compute dtype.
    """
    i, f, g, o = tf.split(tf.cast(z, tf.float32), 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.cast(tf.sigmoid(o) * tf.tanh(c), z.dtype), c

  def call(self, inputs, states):
    """One step as the samplers run it: input [a_{j-1} ; embedding of x_{j-1} ; id of x_{j-1}]."""
    h, c, step, recent, context = states
    attention, pixel_features, previous_id = tf.split(inputs, [self.attention_dim, -1, 1], -1)
    pieces = [pixel_features]
    if self.position_embedding_dim:
      index = tf.cast(step[:, 0], tf.int32)
      pieces += [self.row_embedding(index // self.image_side),
                 self.col_embedding(index % self.image_side)]
    if self.above_context:
      # After the shift, recent holds x_{j-history} .. x_{j-1}; its first k entries are the
      # pixels above-left .. above-right of pixel j.
      recent = tf.concat([recent[:, 1:], tf.cast(previous_id, recent.dtype)], axis=1)
      window = tf.cast(recent[:, :self.above_context], tf.int32)
      embedded = self.above_embedding(window)
      pieces.append(tf.reshape(embedded, [-1, self.above_context * embedded.shape[-1]]))
    if self.context_dim:
      pieces.append(context)
    features = tf.concat(pieces, -1) if len(pieces) > 1 else pixel_features
    z = (tf.matmul(features, self.input_kernel) +
         tf.matmul(tf.concat([attention, h], -1), self.recurrent_kernel) + self.bias)
    h, c = self.lstm_update(z, c)
    return h, [h, c, step + 1.0, recent, context]

  def input_tables(self, pixel_embeddings: tf.Tensor, context: Optional[tf.Tensor], batch):
    """features_j W_in + b for any pixel j, as tables its features index: (tables, static_ids,
    lags, base).

    Every feature but the context is an embedding row, so its product with its block of W_in is
    a row of (embedding table @ block): ``tables`` stacks those products [rows, 4 * units]. Pixel
    j of an image x adds, for each feature f, the row static_ids[j, f] + (x_{j - lags[f]} if
    lags[f] else 0), x before the image being the start symbol: the previous pixel has lag 1,
    each pixel above a lag of about a row; row and column have lag 0 (``static_ids`` [pixels,
    features], ``lags`` a Python list). ``base`` [batch, 4 * units] is b plus the (per-caption)
    context's product. The fused decoder chooses pixels in this form; teacher forcing gathers it
    (:meth:`teacher_forced_input_tables`).

    Float32 whatever the compute dtype: the tables' gradients sum over every pixel of the batch
    (32k rows for cpu_small), and a bfloat16 sum that long loses the small terms.
    """
    dtype = tf.float32
    blocks = tf.split(tf.cast(self.input_kernel, dtype), self.feature_sizes, axis=0)
    blocks.reverse()  # popped in feature order below
    num_pixels = self.image_side * self.image_side
    tables, static_ids, lags, offset = [], [], [], 0

    def add(table, lag, table_ids=None):
      nonlocal offset
      tables.append(tf.matmul(tf.cast(table, dtype), blocks.pop()))
      static_ids.append(offset + (tf.zeros([num_pixels], tf.int32) if table_ids is None
                                  else table_ids))
      lags.append(lag)
      offset += table.shape[0]

    add(pixel_embeddings, 1)                                                 # x_{j-1}
    if self.position_embedding_dim:
      index = tf.range(num_pixels)
      add(self.row_embedding.embeddings, 0, index // self.image_side)
      add(self.col_embedding.embeddings, 0, index % self.image_side)
    # The shift register of :meth:`call`: window entry i of pixel j is x_{j - history + i}.
    for i in range(self.above_context):
      add(self.above_embedding.embeddings, self.history - i)
    base = tf.broadcast_to(tf.cast(self.bias, dtype), [batch, self.bias.shape[0]])
    if self.context_dim:
      base += tf.matmul(tf.cast(context, dtype), blocks.pop())
    return tf.concat(tables, 0), tf.stack(static_ids, -1), lags, base

  def teacher_forced_input_tables(self, pixel_embeddings: tf.Tensor, pixels: tf.Tensor,
                                  context: Optional[tf.Tensor]):
    """:meth:`input_tables` for known images ``pixels`` [batch, num_pixels] (raster order), as
    (tables, ids [batch, num_pixels, features], base): pixel j's input part is
    base + sum_f tables[ids[:, j, f]]."""
    tables, static_ids, lags, base = self.input_tables(pixel_embeddings, context,
                                                       tf.shape(pixels)[0])
    batch = tf.shape(pixels)[0]
    ids = []
    for f, lag in enumerate(lags):
      lagged = (tf.concat([tf.fill([batch, lag], START_SYMBOL), pixels[:, :-lag]], axis=1)
                if lag else 0)
      ids.append(static_ids[None, :, f] + lagged)
    ids = [tf.broadcast_to(x, [batch, static_ids.shape[0]]) for x in ids]
    return tables, tf.stack(ids, -1), base

  def teacher_forced_input_part(self, pixel_embeddings: tf.Tensor, pixels: tf.Tensor,
                                context: Optional[tf.Tensor], dtype) -> tf.Tensor:
    """features_j W_in + b for every pixel j: [batch, num_pixels, 4 * units], in ``dtype``."""
    tables, ids, base = self.teacher_forced_input_tables(pixel_embeddings, pixels, context)
    z = base[:, None, :]
    for f in range(ids.shape[-1]):  # one [batch, pixels, 4 units] gather at a time
      z += tf.gather(tables, ids[..., f])
    return tf.cast(z, dtype)


class _TeacherForcedPixelLSTM(tf.keras.layers.AbstractRNNCell):
  """The same LSTM step for teacher forcing, with the input part of z_j precomputed.

  Input [a_{j-1} ; features_j W_in + b ; tap_j]; output [h_j ; tap_j]. W_rec enters as a tensor
  read once outside the loop, under stop_gradient: its gradient is summed over the steps
  afterwards in one matrix product (:func:`_deferred_weight_gradient`), instead of a [in, 4u]
  outer product accumulated at every step of the backward loop. ``tap_j`` (zeros, width
  ``tap_dim``) only passes through to the attention step, which adds it to W_c's product so that
  W_c's gradient can be deferred the same way (:func:`_teacher_forced_attention`).
  """

  def __init__(self, cell: PixelLSTMCell, recurrent_kernel: tf.Tensor, tap_dim: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    self.cell = cell
    self.kernel = recurrent_kernel
    self.tap_dim = tap_dim

  @property
  def state_size(self):
    return [self.cell.units, self.cell.units]

  def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
    return [tf.zeros([batch_size, self.cell.units], dtype or tf.float32),
            tf.zeros([batch_size, self.cell.units], tf.float32)]  # c in float32, as in the cell

  @property
  def output_size(self):
    return self.cell.units + self.tap_dim

  def call(self, inputs, states):
    h, c = states
    # tf.split, not slicing: its gradient is one concat, a slice's a zero-filled copy per step.
    attention, input_part, tap = tf.split(
        inputs, [self.cell.attention_dim, 4 * self.cell.units, self.tap_dim], axis=-1)
    z = input_part + tf.matmul(tf.concat([attention, h], -1), tf.stop_gradient(self.kernel))
    h, c = self.cell.lstm_update(z, c)
    return (tf.concat([h, tap], -1) if self.tap_dim else h), [h, c]


def _teacher_forced_attention(kernel: tf.Tensor, units: int):
  """:func:`_float32_attention` for teacher forcing: a_j = tanh([h_j ; c^lang_j] W_c + tap_j).

  W_c is a tensor read once outside the loop, under stop_gradient; tap_j (zeros) arrives after
  h_j in the cell output, and its gradient, d loss / d (W_c's pre-activation), leaves the loop
  so that W_c's gradient is one product afterwards (see :func:`_deferred_weight_gradient`).
  """

  def attention_fn(mechanism, cell_output, attention_state, attention_layer):
    del attention_layer  # its kernel is ``kernel``
    h, tap = tf.split(cell_output, [units, -1], axis=-1)
    query = tf.cast(h, tf.float32)
    alignments, next_attention_state = mechanism([query, attention_state])
    context = tf.squeeze(tf.matmul(alignments[:, None, :], mechanism.values), [1])
    x = tf.cast(tf.concat([query, context], 1), kernel.dtype)
    attention = tf.tanh(tf.matmul(x, tf.stop_gradient(kernel)) + tap)
    return attention, alignments, next_attention_state

  return attention_fn


def _float32_attention(mechanism, cell_output, attention_state, attention_layer):
  """tfa's _compute_attention with eqs. 7-9 in float32 whatever the compute dtype.

  Under mixed_bfloat16 the scores, their softmax (alpha_ji) and the context c^lang_j stay
  float32 (bfloat16 keeps 2-3 significant digits, too few for a softmax); only
  a_j = tanh(W_c [h^pix_j ; c^lang_j]) runs in the compute dtype (the layer casts its input).
  """
  query = tf.cast(cell_output, tf.float32)
  alignments, next_attention_state = mechanism([query, attention_state])
  context = tf.squeeze(tf.matmul(alignments[:, None, :], mechanism.values), [1])
  attention = attention_layer(tf.concat([query, context], 1))
  return attention, alignments, next_attention_state


class PixelAttentionWrapper(tfa.seq2seq.AttentionWrapper):
  """AttentionWrapper with float32 attention (see :func:`_float32_attention`).

  Its initial alignments, attention state and alignment history are float32 too, so the loop
  state keeps one dtype from the first step on.
  """

  def __init__(self, cell, mechanism, attention_layer, attention_fn=_float32_attention,
               **kwargs):
    super().__init__(cell, mechanism, attention_layer=attention_layer,
                     attention_fn=attention_fn,
                     # Attention first, so the pixel id stays the input's last channel.
                     cell_input_fn=lambda inputs, attention: tf.concat([attention, inputs], -1),
                     **kwargs)

  def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
    state = super().get_initial_state(inputs=inputs, batch_size=batch_size, dtype=dtype)
    history = state.alignment_history
    if self._alignment_history:
      history = tf.TensorArray(tf.float32, size=0, dynamic_size=True,
                               element_shape=state.alignments.shape)
    return state._replace(alignments=tf.cast(state.alignments, tf.float32),
                          attention_state=tf.cast(state.attention_state, tf.float32),
                          alignment_history=history)


class AttentionWrapperWithCellOutput(PixelAttentionWrapper):
  """The wrapper for teacher forcing: its output is [h_j ; a_j ; alpha_j] (alpha_j: eq. 8)."""

  def __init__(self, cell, mechanism, attention_layer, units: int, memory_time: int, **kwargs):
    super().__init__(cell, mechanism, attention_layer, **kwargs)
    self.units = units
    self.memory_time = memory_time

  @property
  def output_size(self):
    return self.units + self._attention_layer_size + self.memory_time

  def call(self, inputs, state, **kwargs):
    attention, next_state = super().call(inputs, state, **kwargs)
    return tf.concat([next_state.cell_state[0], attention,
                      tf.cast(next_state.alignments, attention.dtype)], -1), next_state


def _deferred_weight_gradient(input_part: tf.Tensor, kernel: tf.Tensor, holder: dict):
  """Identity on ``input_part`` whose gradient also yields d loss / d W_rec.

  With z_j = input_part_j + x_j W_rec, d loss / d input_part_j = d loss / d z_j, so
  d loss / d W_rec = sum_j x_j^T (d loss / d z_j): one [in, batch * steps] x [batch * steps, 4u]
  product. ``holder["x"]`` (the stacked x_j) is filled in after the loop has run; the tape calls
  the gradient function later still.
  """

  @tf.custom_gradient
  def identity(input_part, kernel):
    def grad(d_input_part):
      x = holder["x"]
      d_kernel = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]),
                           tf.reshape(tf.cast(d_input_part, x.dtype), [-1, kernel.shape[-1]]),
                           transpose_a=True)
      return d_input_part, tf.cast(d_kernel, kernel.dtype)
    return tf.identity(input_part), grad

  return identity(input_part, kernel)


class _AttentionAndRecurrentInitializer(tf.keras.initializers.Initializer):
  """W_rec's rows: Glorot for those that see a_{j-1} (as Keras' LSTM kernel), orthogonal for h."""

  def __init__(self, attention_dim: int):
    self.attention_dim = attention_dim

  def __call__(self, shape, dtype=None, **kwargs):
    rows, columns = shape
    parts = []
    if self.attention_dim:
      parts.append(tf.keras.initializers.GlorotUniform()([self.attention_dim, columns], dtype))
    parts.append(tf.keras.initializers.Orthogonal()([rows - self.attention_dim, columns], dtype))
    return tf.concat(parts, 0)

  def get_config(self):
    return {"attention_dim": self.attention_dim}


def _unit_forget_bias(shape, dtype=None, **kwargs):
  """Keras' LSTM default: forget gate bias 1, the others 0."""
  units = shape[0] // 4
  return tf.concat([tf.zeros([units], dtype), tf.ones([units], dtype),
                    tf.zeros([2 * units], dtype)], 0)


class _Untracked:
  def __init__(self):
    self.cells: Dict[bool, tf.keras.layers.Layer] = {}


class AlignPixelRNN(tf.keras.Model):
  """Caption -> annotation vectors -> pixel LSTM with attention -> 256-way softmax per pixel."""

  def __init__(self, config: Config, vocab_size: int, **kwargs):
    super().__init__(name="align_pixel_rnn", **kwargs)
    self.config = config
    self.vocab_size = vocab_size
    c = config
    conditioned = c.conditioning != "none"
    if conditioned:
      # Section 4.1: word embedding (512) and a bidirectional LSTM (512 each way).
      self.word_embedding = tf.keras.layers.Embedding(vocab_size, c.word_embedding_dim,
                                                      name="word_embedding")
      self.encoder = tf.keras.layers.Bidirectional(
          tf.keras.layers.LSTM(c.encoder_units, return_sequences=True), merge_mode="concat",
          name="encoder_bilstm")
    # The previous pixel x_{j-1} (eq. 6) enters through an embedding of 256 values + start.
    self.pixel_embedding = tf.keras.layers.Embedding(c.num_levels + 1, c.pixel_embedding_dim,
                                                     name="pixel_embedding")
    self.pixel_embedding.build((None,))  # teacher forcing reads its matrix
    context_dim = 2 * c.encoder_units if c.conditioning == "mean" else 0
    attention_dim = c.attention_units if c.conditioning == "attention" else 0
    if c.pixel_loop == "fused":
      from text2pixel import kernels
      kernels.ops()  # compiled (once per machine) and loaded here, not inside a traced function
    self.pixel_cell = PixelLSTMCell(c.decoder_units, c.image_side, c.pixel_embedding_dim,
                                    attention_dim, c.position_embedding_dim, c.above_context,
                                    context_dim, name="pixel_lstm")
    if c.conditioning == "attention":
      # eq. 9: Luong's score e_ji = h^pix_j . W_a h^lang_i (memory projected to the LSTM size).
      self.attention_mechanism = tfa.seq2seq.LuongAttention(c.decoder_units, dtype="float32",
                                                            name="luong_attention")
      # a_j = tanh(W_c [h^pix_j ; c^lang_j]), shared by the training and the sampling wrappers.
      self.attention_layer = tf.keras.layers.Dense(c.attention_units, activation="tanh",
                                                   use_bias=False, name="attention_layer")
      self.attention_layer.build((None, c.decoder_units + 2 * c.encoder_units))  # read as W_c
    # eq. 5: softmax over the 256 pixel values, computed in float32 under mixed precision.
    self.output_layer = tf.keras.layers.Dense(c.num_levels, dtype="float32", name="pixel_logits")
    # Plain Python holder: the wrappers own no weights (they share the cell, the mechanism and
    # the attention layer), and Keras must not track them into checkpoints.
    self._wrappers = _Untracked()

  # --- encoder ------------------------------------------------------------------------------

  def encode(self, caption_ids: tf.Tensor, caption_len: tf.Tensor) -> Optional[tf.Tensor]:
    """Annotation vectors h^lang [batch, N, 2 * encoder_units] (section 4.1).

    The mask comes from the caption length, not from pad ids, so whatever follows a caption in
    its padded row never reaches the backward LSTM.
    """
    if self.config.conditioning == "none":
      return None
    embedded = self.word_embedding(caption_ids)
    mask = tf.sequence_mask(caption_len, tf.shape(caption_ids)[1])
    return self.encoder(embedded, mask=mask)

  # --- decoder ------------------------------------------------------------------------------

  def decoder_cell(self, alignment_history: bool = False) -> tf.keras.layers.Layer:
    """The pixel LSTM, wrapped by AttentionWrapper when the model attends (eqs. 6-9)."""
    if self.config.conditioning != "attention":
      return self.pixel_cell
    if alignment_history not in self._wrappers.cells:
      self._wrappers.cells[alignment_history] = PixelAttentionWrapper(
          self.pixel_cell, self.attention_mechanism, self.attention_layer,
          alignment_history=alignment_history, output_attention=True, name="attention_wrapper")
    return self._wrappers.cells[alignment_history]

  def decoder_initial_state(self, annotations: Optional[tf.Tensor], caption_len: tf.Tensor,
                            batch_size, alignment_history: bool = False):
    """Sets up the attention memory and returns (cell, initial state) for a batch.

    ``annotations`` and ``caption_len`` may already be tiled (samples per caption, beams).
    """
    cell = self.decoder_cell(alignment_history)
    dtype = self.compute_dtype_for_state()
    if self.config.conditioning == "attention":
      self.set_attention_memory(annotations, caption_len)
      return cell, cell.get_initial_state(batch_size=batch_size, dtype=dtype)
    state = self.pixel_cell.get_initial_state(batch_size=batch_size, dtype=dtype)
    if self.config.conditioning == "mean":
      state[4] = tf.cast(self.mean_annotation(annotations, caption_len), dtype)
    return cell, state

  def set_attention_memory(self, annotations, caption_len):
    """The annotations the mechanism attends over, in float32 (eqs. 7-9 are float32 always).

    The memory's sequence length masks padding so it is never attended (eq. 8 over real words).
    """
    self.attention_mechanism.setup_memory(tf.cast(annotations, tf.float32),
                                          memory_sequence_length=caption_len)

  def compute_dtype_for_state(self):
    return tf.as_dtype(self.pixel_embedding.compute_dtype)

  def pixel_input(self, pixel_ids: tf.Tensor) -> tf.Tensor:
    """The decoder input for previous pixel ids: their embedding and the id itself (last channel).

    This is also the ``embedding_fn`` the tfa samplers call on the ids they draw.
    """
    embedded = self.pixel_embedding(pixel_ids)
    return tf.concat([embedded, tf.cast(pixel_ids, embedded.dtype)[..., None]], axis=-1)

  def teacher_forced_inputs(self, images: tf.Tensor) -> tf.Tensor:
    """Decoder inputs x_{j-1}: the start symbol, then every pixel but the last."""
    pixels = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    start = tf.fill([tf.shape(pixels)[0], 1], START_SYMBOL)
    return self.pixel_input(tf.concat([start, pixels[:, :-1]], axis=1))

  def mean_annotation(self, annotations, caption_len):
    """The ``mean`` baseline's context: the average annotation vector over the real words."""
    mask = tf.sequence_mask(caption_len, tf.shape(annotations)[1], dtype=annotations.dtype)
    return tf.reduce_sum(annotations * mask[..., None], 1) / tf.reduce_sum(mask, 1, keepdims=True)

  def logits_from_annotations(self, annotations, caption_len, images) -> tf.Tensor:
    """Teacher-forced logits [batch, num_pixels, 256]; the whole raster in one graph loop.

    Computes what :meth:`logits_stepwise` (the samplers' cell, step by step) computes, faster
    when gradients are taken:
    the input part of the LSTM pre-activations for all pixels before the loop, and W_rec's
    gradient after it (see :class:`_TeacherForcedPixelLSTM`).
    """
    c = self.config
    dtype = self.compute_dtype_for_state()
    pixels = tf.reshape(tf.cast(images, tf.int32), [-1, c.num_pixels])
    batch = tf.shape(pixels)[0]
    context = (self.mean_annotation(annotations, caption_len)
               if c.conditioning == "mean" else None)
    if c.pixel_loop == "fused":
      return self._logits_fused(annotations, caption_len, pixels, context, dtype)
    input_part = self.pixel_cell.teacher_forced_input_part(self.pixel_embedding.embeddings,
                                                           pixels, context, dtype)
    kernel = tf.cast(tf.convert_to_tensor(self.pixel_cell.recurrent_kernel), dtype)
    holder = {}
    inputs = _deferred_weight_gradient(input_part, kernel, holder)
    units, memory_time = c.decoder_units, c.max_caption_len
    shifted = lambda x: tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], axis=1)  # x_0 = 0
    if c.conditioning != "attention":
      cell = _TeacherForcedPixelLSTM(self.pixel_cell, kernel, name="teacher_forced_pixel_lstm")
      h = tf.keras.layers.RNN(cell, return_sequences=True, name="pixel_rnn")(
          inputs, initial_state=cell.get_initial_state(batch_size=batch, dtype=dtype))
      holder["x"] = tf.stop_gradient(shifted(h))
      return self.output_layer(h)

    attention_kernel = tf.cast(tf.convert_to_tensor(self.attention_layer.kernel), dtype)
    attention_holder = {}
    tap = tf.zeros([batch, c.num_pixels, c.attention_units], dtype)
    inputs = tf.concat([inputs, _deferred_weight_gradient(tap, attention_kernel,
                                                          attention_holder)], -1)
    self.set_attention_memory(annotations, caption_len)
    cell = AttentionWrapperWithCellOutput(
        _TeacherForcedPixelLSTM(self.pixel_cell, kernel, tap_dim=c.attention_units,
                                name="teacher_forced_pixel_lstm"),
        self.attention_mechanism, self.attention_layer, units, memory_time,
        attention_fn=_teacher_forced_attention(attention_kernel, units), output_attention=True,
        name="teacher_forced_attention")
    outputs = tf.keras.layers.RNN(cell, return_sequences=True, name="pixel_rnn")(
        inputs, initial_state=cell.get_initial_state(batch_size=batch, dtype=dtype))
    h, attention, alignments = tf.split(
        outputs, [units, c.attention_units, memory_time], axis=-1)        # j = 1 .. N
    holder["x"] = tf.stop_gradient(tf.concat([shifted(attention), shifted(h)], -1))
    context = tf.matmul(tf.cast(alignments, tf.float32), self.attention_mechanism.values)
    attention_holder["x"] = tf.stop_gradient(
        tf.cast(tf.concat([tf.cast(h, tf.float32), context], -1), dtype))
    return self.output_layer(attention)                                    # eq. 5

  def _logits_fused(self, annotations, caption_len, pixels, context, dtype) -> tf.Tensor:
    """:meth:`logits_from_annotations` with the whole loop in one C++ op (float32 throughout)."""
    from text2pixel import kernels  # compiled on first use
    f32 = lambda x: tf.cast(tf.convert_to_tensor(x), tf.float32)
    inputs = self.pixel_cell.teacher_forced_input_tables(self.pixel_embedding.embeddings, pixels,
                                                         context)
    recurrent_kernel = f32(self.pixel_cell.recurrent_kernel)
    if self.config.conditioning != "attention":
      return self.output_layer(tf.cast(kernels.pixel_loop(*inputs, recurrent_kernel).h, dtype))
    self.set_attention_memory(annotations, caption_len)
    mechanism = self.attention_mechanism
    mask = tf.sequence_mask(caption_len, tf.shape(mechanism.keys)[1], dtype=tf.float32)
    loop = kernels.pixel_loop(*inputs, recurrent_kernel, mechanism.keys, mechanism.values, mask,
                              f32(self.attention_layer.kernel))
    return self.output_layer(tf.cast(loop.attention, dtype))                # eq. 5

  def logits_stepwise(self, annotations, caption_len, images) -> tf.Tensor:
    """Reference for :meth:`logits_from_annotations`: the samplers' cell run over the image."""
    inputs = self.teacher_forced_inputs(images)
    batch = tf.shape(inputs)[0]
    cell, state = self.decoder_initial_state(annotations, caption_len, batch)
    rnn = tf.keras.layers.RNN(cell, return_sequences=True, name="pixel_rnn_stepwise")
    outputs = rnn(inputs, initial_state=tf.nest.flatten(state) if
                  self.config.conditioning != "attention" else state)
    return self.output_layer(outputs)

  def call(self, inputs: Dict[str, tf.Tensor], training=None) -> tf.Tensor:
    """Teacher-forced logits. The fused loop serves both training and validation; the graph
    loop's training path is built for gradients, and without them (validation) the samplers'
    cell over the image needs a third of its memory and is faster."""
    annotations = self.encode(inputs["caption_ids"], inputs["caption_len"])
    fast = training or self.config.pixel_loop == "fused"
    logits = self.logits_from_annotations if fast else self.logits_stepwise
    return logits(annotations, inputs["caption_len"], inputs["image"])

  # --- likelihood ---------------------------------------------------------------------------

  def pixel_log_probs(self, logits: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """log p(x_j | x_<j, y) for every pixel: [batch, num_pixels] (float32)."""
    targets = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return tf.gather(log_probs, targets, batch_dims=2)

  def decode_fused(self, annotations, caption_len, mode: str, targets=None, uniforms=None,
                   temperature=1.0):
    """The fused decoder (text2pixel/kernels): the samplers' cell and eq. 5 in one op, without
    gradients. (pixels [batch, num_pixels] int32, log p(x_j | x_<j, y) [batch, num_pixels] at
    temperature 1, alpha [batch, num_pixels, words]); ``mode`` and the rest as for
    :func:`kernels.pixel_decode`."""
    from text2pixel import kernels
    f32 = lambda x: tf.cast(tf.convert_to_tensor(x), tf.float32)
    c = self.config
    batch = tf.shape(caption_len)[0]
    context = (self.mean_annotation(annotations, caption_len)
               if c.conditioning == "mean" else None)
    tables, static_ids, lags, base = self.pixel_cell.input_tables(
        self.pixel_embedding.embeddings, context, batch)
    attention = {}
    if c.conditioning == "attention":
      self.set_attention_memory(annotations, caption_len)
      mechanism = self.attention_mechanism
      attention = dict(keys=mechanism.keys, values=mechanism.values,
                       memory_mask=tf.sequence_mask(caption_len, tf.shape(mechanism.keys)[1],
                                                    dtype=tf.float32),
                       attention_kernel=f32(self.attention_layer.kernel))
    return kernels.pixel_decode(
        mode, tables, static_ids, tf.constant(lags, tf.int32), base,
        f32(self.pixel_cell.recurrent_kernel), f32(self.output_layer.kernel),
        f32(self.output_layer.bias), targets=targets, uniforms=uniforms,
        temperature=temperature, **attention)

  def _scores(self, annotations, caption_len, images, loop: Optional[str]) -> tf.Tensor:
    """log p(x | y) in nats per image [batch] for annotations and images of the same batch."""
    if (loop or self.config.pixel_loop) == "fused":
      pixels = tf.reshape(tf.cast(images, tf.int32), [-1, self.config.num_pixels])
      log_probs = self.decode_fused(annotations, caption_len, "score", targets=pixels)[1]
    else:
      log_probs = self.pixel_log_probs(self.logits_stepwise(annotations, caption_len, images),
                                       images)
    return tf.reduce_sum(log_probs, axis=1)

  def log_likelihood(self, caption_ids, caption_len, images,
                     loop: Optional[str] = None) -> tf.Tensor:
    """Exact log p(x | y) in nats per image (eq. 1), [batch]. ``loop``: "fused" (the C++ op) or
    "graph" (TensorFlow ops, what an export holds); default the config's ``pixel_loop``."""
    return self._scores(self.encode(caption_ids, caption_len), caption_len, images, loop)

  def log_likelihood_matrix(self, caption_ids, caption_len, images,
                            loop: Optional[str] = None) -> tf.Tensor:
    """log p(image j | caption i) for every pair: [captions, images] (retrieval, eq. 1).

    The encoder runs once per caption; its annotations are then repeated for every image.
    """
    num_captions, num_images = tf.shape(caption_ids)[0], tf.shape(images)[0]
    annotations = self.encode(caption_ids, caption_len)
    if annotations is not None:
      annotations = tf.repeat(annotations, num_images, axis=0)
    lengths = tf.repeat(caption_len, num_images, axis=0)
    tiled_images = tf.tile(images, [num_captions, 1, 1])
    scores = self._scores(annotations, lengths, tiled_images, loop)
    return tf.reshape(scores, [num_captions, num_images])


def sequence_loss(logits: tf.Tensor, images: tf.Tensor, num_pixels: int,
                  weights: Optional[tf.Tensor] = None, per_image: bool = False) -> tf.Tensor:
  """Weighted sequence cross-entropy (section 6): mean nats per pixel over the batch, or of each
  image ([batch]) with ``per_image`` (what the trainer averages over its replicas)."""
  targets = tf.reshape(tf.cast(images, tf.int32), [-1, num_pixels])
  if weights is None:
    weights = tf.ones_like(targets, tf.float32)
  return tfa.seq2seq.sequence_loss(tf.cast(logits, tf.float32), targets, weights,
                                   average_across_batch=not per_image)


def build(config: Config, vocab_size: int) -> AlignPixelRNN:
  """A model with its weights created (so checkpoints restore into it immediately)."""
  model = AlignPixelRNN(config, vocab_size)
  side, length = config.image_side, config.max_caption_len
  model(dict(caption_ids=tf.ones([1, length], tf.int32), caption_len=tf.ones([1], tf.int32),
             image=tf.zeros([1, side, side], tf.uint8)))
  return model
