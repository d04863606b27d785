"""A trained model's weights in a wider model that computes the same function.

``--init_from`` a run whose pixel LSTM (``decoder_units``), attention layer
(``attention_units``) or caption BiLSTM (``encoder_units``) is narrower than the new run's: the
new run starts where the old one is instead of from scratch (the idea of Net2Net, Chen et al.
2016, with new units that start switched off rather than copies of old ones). The shipped model
took hours of this CPU to get where it is; a wider model from scratch would need as long again
before it could be compared.

How the function is kept. Every weight of the narrow model is placed where its units sit in the
wide one; a new unit keeps the wide model's fresh initial values for what flows *into* it (so the
new units differ from each other and from zero), and every weight that carries a new unit's value
*out* to something the narrow model had is zero:
  * LSTM gates (eq. 6, and the BiLSTM's): rows of the recurrent kernel for a new h_{j-1} (or new
    a_{j-1}) unit are zero in the old units' gate columns; the new units' own columns keep their
    initial values;
  * attention (eq. 9): the new pixel units' columns of W_a (Luong's memory layer) are zero, and
    so are its rows for new BiLSTM features, so the scores h^pix_j . W_a h^lang_i, hence alpha_ji,
    are the old ones;
  * a_j = tanh(W_c [h^pix_j ; c^lang_j]): rows of W_c for new h^pix units and new annotation
    features are zero in the old a_j columns (with ``conditioning="mean"``, the same for the
    context's rows of the pixel LSTM's input kernel);
  * logits (eq. 5): the output layer's rows for new a_j units (or new h^pix units where there is
    no attention layer) are zero.
Only the function at the start is the narrow model's. At the first gradient step the weights
into the new units get no gradient (nothing they feed reaches the loss yet) and the zero weights
out of them do; from the second step on the new units learn like the rest. A fresh RMSProp
moves every weight by about 3x the learning rate at its first updates, which summed over many
new units would shift the old units' gates: start a widened run with ``--warmup_steps``.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from text2pixel.config import Config
from text2pixel.errors import ConfigError

# The model fields a warm start may grow; every other model field must match.
WIDENABLE_FIELDS = ("decoder_units", "attention_units", "encoder_units")


def _matters(field: str, config: Config) -> bool:
  """Whether the field changes what the model computes (a BiLSTM, an attention layer)."""
  if field == "attention_units":
    return config.conditioning == "attention"
  if field == "encoder_units":
    return config.conditioning != "none" and config.encoder in ("bilstm", "bilstm_keys")
  return True


def widening(source: Config, target: Config) -> Dict[str, tuple]:
  """{field: (source value, target value)} of the fields ``target`` widens; raises ConfigError
  if one of them is narrower in ``target``. A field counts only where the model has what it
  sizes (attention_units an attention layer, encoder_units a BiLSTM)."""
  grown = {}
  for field in WIDENABLE_FIELDS:
    if not _matters(field, target):
      continue
    old, new = getattr(source, field), getattr(target, field)
    if new < old:
      raise ConfigError(f"{field} {new} is narrower than the source model's {old}: a warm "
                        f"start can widen a model, not narrow it (--{field} {old} or more)")
    if new > old:
      grown[field] = (old, new)
  return grown


def _gate_columns(units_old: int, units_new: int) -> np.ndarray:
  """Where the old gate columns (i, f, c, o blocks of units_old) sit among 4 * units_new."""
  return np.concatenate([g * units_new + np.arange(units_old) for g in range(4)])


def _grow(fresh: np.ndarray, old: np.ndarray, rows: np.ndarray,
          cols: Optional[np.ndarray] = None) -> np.ndarray:
  """``fresh`` with ``old`` at the index arrays rows x cols, and zero where a row ``rows`` does
  not name (an input from a new unit) meets an old column (an output the old model had). A
  vector (a bias) is placed at ``rows``."""
  out = fresh.copy()
  if old.ndim == 1:
    out[rows] = old
    return out
  new_rows = np.setdiff1d(np.arange(fresh.shape[0]), rows)
  out[np.ix_(new_rows, cols)] = 0.0
  out[np.ix_(rows, cols)] = old
  return out


def widen_into(source: tf.keras.Model, target: tf.keras.Model) -> None:
  """Sets ``target``'s weights (its fresh initial values for new units) so that it computes what
  ``source`` computes. Both are built AlignPixelRNN models whose configs differ at most in
  WIDENABLE_FIELDS, each that sizes something the model has (see :func:`widening`) no narrower
  in ``target``."""
  s_config, t_config = source.config, target.config
  widening(s_config, t_config)
  attends = t_config.conditioning == "attention"
  u_old, u_new = s_config.decoder_units, t_config.decoder_units
  a_old, a_new = ((s_config.attention_units, t_config.attention_units) if attends else (0, 0))
  e_old, e_new = s_config.encoder_units, t_config.encoder_units
  # Where each old feature sits in the wide model's vectors.
  h_pix, a = np.arange(u_old), np.arange(a_old)
  bilstm_features = np.concatenate([np.arange(e_old), e_new + np.arange(e_old)])  # [fwd ; bwd]
  keys = bilstm_features if t_config.encoder != "embedding" else np.arange(s_config.annotation_dim)
  annotations = (bilstm_features if t_config.encoder == "bilstm"
                 else np.arange(s_config.annotation_dim))  # c^lang_j's (the values)
  cell = target.pixel_cell
  rules = {  # weight -> its (rows, columns) in the wide model
      cell.bias.ref(): (_gate_columns(u_old, u_new), None),
      cell.recurrent_kernel.ref(): (np.concatenate([a, a_new + h_pix]),
                                    _gate_columns(u_old, u_new)),
      target.output_layer.kernel.ref(): (a if attends else h_pix, np.arange(t_config.num_levels)),
  }
  context_dim = cell.context_dim  # the mean baseline's context: the input kernel's last rows
  old_inputs = np.arange(sum(cell.feature_sizes) - context_dim)
  if context_dim:
    old_inputs = np.concatenate([old_inputs, old_inputs.size + annotations])
  rules[cell.input_kernel.ref()] = (old_inputs, _gate_columns(u_old, u_new))
  if attends:
    rules[target.attention_layer.kernel.ref()] = (np.concatenate([h_pix, u_new + annotations]), a)
  if hasattr(target, "encoder"):
    gates = _gate_columns(e_old, e_new)
    for lstm in (target.encoder.forward_layer, target.encoder.backward_layer):
      rules[lstm.cell.kernel.ref()] = (np.arange(t_config.word_embedding_dim), gates)
      rules[lstm.cell.recurrent_kernel.ref()] = (np.arange(e_old), gates)
      rules[lstm.cell.bias.ref()] = (gates, None)

  def widened(variable, fresh: np.ndarray, old: np.ndarray) -> np.ndarray:
    if attends and variable is target.attention_mechanism.memory_layer.kernel:
      out = np.zeros_like(fresh)  # W_a: new keys (features or pixel units) score nothing
      out[np.ix_(keys, h_pix)] = old
      return out
    if variable.ref() in rules:
      return _grow(fresh, old, *rules[variable.ref()])
    return old

  # Both models create their weights in the same order (AlignPixelRNN keeps it for the moving
  # average's checkpoints); Keras' uniquified names (forward_lstm_1) cannot pair them.
  if len(source.weights) != len(target.weights):
    raise ConfigError(f"the models have {len(source.weights)} and {len(target.weights)} weights")
  for old_variable, variable in zip(source.weights, target.weights):
    try:
      value = widened(variable, variable.numpy(), old_variable.numpy())
    except (IndexError, ValueError):  # a weight of a size this module does not know
      value = None
    if value is None or value.shape != tuple(variable.shape):
      raise ConfigError(f"cannot widen weight {old_variable.name} {tuple(old_variable.shape)} "
                        f"into {variable.name} {tuple(variable.shape)}")
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))
