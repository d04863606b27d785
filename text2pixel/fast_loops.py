"""The pixel loop built for speed: teacher forcing for training, and the fused decoder.

Each computes what the paper's model (text2pixel/model.py) computes by running its samplers' cell,
``AttentionWrapper(PixelLSTMCell)``, one pixel at a time (:meth:`AlignPixelRNN.logits_stepwise`,
the reference); tests pin every path here to it (tests/test_model.py, tests/test_kernels.py,
tests/test_equations.py). Two ideas make them fast:

* The LSTM input part features_j W_in + b is known for every pixel before the loop: every
  feature is an embedding row, so its product with W_in is a row of a precomputed table
  (:func:`input_tables`), gathered per pixel.
* W_rec's and W_c's gradients, sums over the 1,024 steps of per-step outer products, are one
  matrix product each after the loop (:class:`DeferredWeightGradient`).

Teacher forcing has two implementations (``Config.pixel_loop``): "fused", one C++ op per
direction (text2pixel/kernels), and "graph", TensorFlow ops in a Keras RNN (what runs where the
op cannot be built). The fused decoder runs scoring, greedy and ancestral sampling in one op.
"""

from __future__ import annotations

import dataclasses
from typing import List, NamedTuple, Optional

import tensorflow as tf

from text2pixel.model import START_SYMBOL, PixelAttentionWrapper, PixelLSTMCell


# --- the LSTM input part known before the loop --------------------------------------------------

class InputTables(NamedTuple):
  """features_j W_in + b for any pixel j, as table rows: pixel j of an image x adds, for each
  feature f, tables[static_ids[j, f] + (x_{j - lags[f]} if lags[f] else 0)] to ``base``, x
  before the image being the start symbol."""
  tables: tf.Tensor      # [rows, 4 units]: each embedding table @ its block of W_in, stacked
  static_ids: tf.Tensor  # [pixels, features]: the row (lag 0) or the table's first row
  lags: List[int]        # previous pixel 1, each pixel above about a row, row and column 0
  base: tf.Tensor        # [batch, 4 units]: b, plus the per-caption context's product


def input_tables(cell: PixelLSTMCell, pixel_embeddings: tf.Tensor, context: Optional[tf.Tensor],
                 batch) -> InputTables:
  """The cell's input part as :class:`InputTables`, in the feature order of its W_in rows.

  Float32 whatever the compute dtype: the tables' gradients sum over every pixel of the batch
  (32k rows for cpu_small), and a bfloat16 sum that long loses the small terms.
  """
  dtype = tf.float32
  blocks = tf.split(tf.cast(cell.input_kernel, dtype), cell.feature_sizes, axis=0)
  blocks.reverse()  # popped in feature order below
  num_pixels = cell.image_side * cell.image_side
  tables, static_ids, lags, offset = [], [], [], 0

  def add(table, lag, table_ids=None):
    nonlocal offset
    tables.append(tf.matmul(tf.cast(table, dtype), blocks.pop()))
    static_ids.append(offset + (tf.zeros([num_pixels], tf.int32) if table_ids is None
                                else table_ids))
    lags.append(lag)
    offset += table.shape[0]

  add(pixel_embeddings, 1)                                                   # x_{j-1}
  if cell.position_embedding_dim:
    index = tf.range(num_pixels)
    add(cell.row_embedding.embeddings, 0, index // cell.image_side)
    add(cell.col_embedding.embeddings, 0, index % cell.image_side)
  # The cell's shift register: window entry i of pixel j is x_{j - history + i}.
  for i in range(cell.above_context):
    add(cell.above_embedding.embeddings, cell.history - i)
  base = tf.broadcast_to(tf.cast(cell.bias, dtype), [batch, cell.bias.shape[0]])
  if cell.context_dim:
    base += tf.matmul(tf.cast(context, dtype), blocks.pop())
  return InputTables(tf.concat(tables, 0), tf.stack(static_ids, -1), lags, base)


def teacher_forced_ids(tables: InputTables, pixels: tf.Tensor) -> tf.Tensor:
  """The table rows every pixel of known images ``pixels`` [batch, num_pixels] adds:
  [batch, num_pixels, features]."""
  batch, num_pixels = tf.shape(pixels)[0], tables.static_ids.shape[0]
  ids = []
  for f, lag in enumerate(tables.lags):
    lagged = (tf.concat([tf.fill([batch, lag], START_SYMBOL), pixels[:, :-lag]], axis=1)
              if lag else 0)
    ids.append(tf.broadcast_to(tables.static_ids[None, :, f] + lagged, [batch, num_pixels]))
  return tf.stack(ids, -1)


# --- fused: the C++ ops -------------------------------------------------------------------------

def _f32(x) -> tf.Tensor:
  return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _fused_attention(model, annotations, caption_len) -> dict:
  """The attention arguments of the fused ops (none for a model that does not attend)."""
  if not model.conditioning.attends:
    return {}
  model.conditioning.set_memory(annotations, caption_len)
  mechanism = model.attention_mechanism
  return dict(keys=mechanism.keys, values=mechanism.values,
              memory_mask=tf.sequence_mask(caption_len, tf.shape(mechanism.keys)[1],
                                           dtype=tf.float32),
              attention_kernel=_f32(model.attention_layer.kernel))


def fused_logits(model, annotations, caption_len, pixels, dtype):
  """Teacher-forced (logits [batch, num_pixels, 256], h^pix [batch, num_pixels, units]) with the
  whole loop in one C++ op."""
  from text2pixel import kernels  # compiled on first use
  tables = input_tables(model.pixel_cell, model.pixel_embedding.embeddings,
                        model.conditioning.context(annotations, caption_len),
                        tf.shape(pixels)[0])
  loop = kernels.pixel_loop(tables.tables, teacher_forced_ids(tables, pixels), tables.base,
                            _f32(model.pixel_cell.recurrent_kernel),
                            **_fused_attention(model, annotations, caption_len))
  logits = model.output_layer(tf.cast(loop.attention if model.conditioning.attends else loop.h,
                                      dtype))                                # eq. 5
  return logits, loop.h


def fused_decode(model, annotations, caption_len, mode: str, targets=None, uniforms=None,
                 temperature=1.0, guidance=None):
  """The fused decoder, no gradient: (pixels [batch, num_pixels] int32, log p(x_j | x_<j, y)
  [batch, num_pixels] at temperature 1, alpha [batch, num_pixels, words]); ``mode`` ("score",
  "greedy", "sample"), ``guidance`` and the rest as for :func:`kernels.pixel_decode`."""
  from text2pixel import kernels
  tables = input_tables(model.pixel_cell, model.pixel_embedding.embeddings,
                        model.conditioning.context(annotations, caption_len),
                        tf.shape(caption_len)[0])
  return kernels.pixel_decode(
      mode, tables.tables, tables.static_ids, tf.constant(tables.lags, tf.int32), tables.base,
      _f32(model.pixel_cell.recurrent_kernel), _f32(model.output_layer.kernel),
      _f32(model.output_layer.bias), targets=targets, uniforms=uniforms,
      temperature=temperature, guidance=guidance,
      **_fused_attention(model, annotations, caption_len))


# --- graph: TensorFlow ops ----------------------------------------------------------------------

@dataclasses.dataclass
class DeferredWeightGradient:
  """d loss / d W for a loop's z_j = part_j + x_j W, as one matrix product after the loop.

  d loss / d part_j = d loss / d z_j, so d loss / d W = sum_j x_j^T (d loss / d z_j): one
  [in, batch * steps] x [batch * steps, out] product instead of a per-step outer product summed
  inside the backward loop. :meth:`through` passes ``part`` into the loop unchanged, with this
  gradient attached; the loop reads W under stop_gradient, and once it has run,
  :meth:`set_loop_inputs` gives the x_j it multiplied by W (the tape calls the gradient later).
  """
  kernel: tf.Tensor
  loop_inputs: Optional[tf.Tensor] = None  # x_j for every step j: [batch, steps, in]

  def set_loop_inputs(self, x: tf.Tensor) -> None:
    self.loop_inputs = tf.stop_gradient(x)

  def through(self, part: tf.Tensor) -> tf.Tensor:
    @tf.custom_gradient
    def identity(part, kernel):
      def grad(d_part):
        x = self.loop_inputs
        d_kernel = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]),
                             tf.reshape(tf.cast(d_part, x.dtype), [-1, kernel.shape[-1]]),
                             transpose_a=True)
        return d_part, tf.cast(d_kernel, kernel.dtype)
      return tf.identity(part), grad

    return identity(part, self.kernel)


class _TeacherForcedPixelLSTM(tf.keras.layers.AbstractRNNCell):
  """The pixel LSTM given its input part precomputed (input tables, gathered before the loop).

  Input [a_{j-1} ; features_j W_in + b ; tap_j]; output [h_j ; tap_j]. W_rec is a tensor read
  under stop_gradient (its gradient is deferred). ``tap_j`` (zeros, width ``tap_dim``) only
  passes through to the attention step, which adds it to W_c's product so that W_c's gradient can
  be deferred the same way (:func:`_teacher_forced_attention`).
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
  """The model's float32 attention step for teacher forcing: a_j = tanh([h_j ; c^lang_j] W_c +
  tap_j), W_c read under stop_gradient; tap_j's gradient, d loss / d (W_c's pre-activation),
  leaves the loop for W_c's deferred gradient."""

  def attention_fn(mechanism, cell_output, attention_state, attention_layer):
    del attention_layer  # its kernel is ``kernel``
    h, tap = tf.split(cell_output, [units, -1], axis=-1)
    query = tf.cast(h, tf.float32)
    alignments, next_attention_state = mechanism([query, attention_state])        # eqs. 9, 8
    context = tf.squeeze(tf.matmul(alignments[:, None, :], mechanism.values), [1])  # eq. 7
    x = tf.cast(tf.concat([query, context], 1), kernel.dtype)
    attention = tf.tanh(tf.matmul(x, tf.stop_gradient(kernel)) + tap)
    return attention, alignments, next_attention_state

  return attention_fn


class AttentionWrapperWithCellOutput(PixelAttentionWrapper):
  """The wrapper for teacher forcing: its output is [h_j ; a_j ; alpha_j] (alpha_j: eq. 8).
  (No leading underscore: tfa names a scope after the class, and a scope cannot start with one.)"""

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


def _shifted(x: tf.Tensor) -> tf.Tensor:
  """x_{j-1} for every j, with x_{-1} = 0."""
  return tf.concat([tf.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def graph_logits(model, annotations, caption_len, pixels, dtype):
  """Teacher-forced (logits [batch, num_pixels, 256], h^pix [batch, num_pixels, units]) in one
  Keras RNN of TensorFlow ops."""
  c = model.config
  cell = model.pixel_cell
  batch = tf.shape(pixels)[0]
  tables = input_tables(cell, model.pixel_embedding.embeddings,
                        model.conditioning.context(annotations, caption_len), batch)
  ids = teacher_forced_ids(tables, pixels)
  input_part = tables.base[:, None, :]
  for f in range(ids.shape[-1]):  # one [batch, pixels, 4 units] gather at a time
    input_part += tf.gather(tables.tables, ids[..., f])
  recurrent = DeferredWeightGradient(tf.cast(tf.convert_to_tensor(cell.recurrent_kernel), dtype))
  inputs = recurrent.through(tf.cast(input_part, dtype))
  if not model.conditioning.attends:
    lstm = _TeacherForcedPixelLSTM(cell, recurrent.kernel, name="teacher_forced_pixel_lstm")
    h = tf.keras.layers.RNN(lstm, return_sequences=True, name="pixel_rnn")(
        inputs, initial_state=lstm.get_initial_state(batch_size=batch, dtype=dtype))
    recurrent.set_loop_inputs(_shifted(h))
    return model.output_layer(h), h                                          # eq. 5

  units, memory_time = c.decoder_units, c.max_caption_len
  attention_weights = DeferredWeightGradient(
      tf.cast(tf.convert_to_tensor(model.attention_layer.kernel), dtype))
  tap = tf.zeros([batch, c.num_pixels, c.attention_units], dtype)
  inputs = tf.concat([inputs, attention_weights.through(tap)], -1)
  model.conditioning.set_memory(annotations, caption_len)
  wrapper = AttentionWrapperWithCellOutput(
      _TeacherForcedPixelLSTM(cell, recurrent.kernel, tap_dim=c.attention_units,
                              name="teacher_forced_pixel_lstm"),
      model.attention_mechanism, model.attention_layer, units, memory_time,
      attention_fn=_teacher_forced_attention(attention_weights.kernel, units),
      output_attention=True, name="teacher_forced_attention")
  outputs = tf.keras.layers.RNN(wrapper, return_sequences=True, name="pixel_rnn")(
      inputs, initial_state=wrapper.get_initial_state(batch_size=batch, dtype=dtype))
  h, attention, alignments = tf.split(outputs, [units, c.attention_units, memory_time], axis=-1)
  recurrent.set_loop_inputs(tf.concat([_shifted(attention), _shifted(h)], -1))
  context = tf.matmul(tf.cast(alignments, tf.float32), model.attention_mechanism.values)
  attention_weights.set_loop_inputs(tf.cast(tf.concat([tf.cast(h, tf.float32), context], -1),
                                            dtype))
  return model.output_layer(attention), h                                    # eq. 5


def teacher_forced_logits(model, annotations, caption_len, images):
  """(logits [batch, num_pixels, 256], h^pix_j [batch, num_pixels, units]) of known images by the
  config's ``pixel_loop``; h^pix_j is what pixel j's attention queried (eq. 9)."""
  pixels = tf.reshape(tf.cast(images, tf.int32), [-1, model.config.num_pixels])
  dtype = model.compute_dtype_for_state()
  loop = fused_logits if model.config.pixel_loop == "fused" else graph_logits
  return loop(model, annotations, caption_len, pixels, dtype)
