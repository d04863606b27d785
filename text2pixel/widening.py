"""A trained model's weights in a wider model that computes the same function.

``--init_from`` a run whose pixel LSTM (``decoder_units``) or attention layer
(``attention_units``) is narrower than the new run's: the new run starts where the old one is
instead of from scratch (the idea of Net2Net, Chen et al. 2016, with new units that start
switched off rather than copies of old ones). The shipped model took hours of this CPU to get
where it is; a wider model from scratch would need as long again before it could be compared.

How the function is kept. Every weight of the narrow model is placed where its unit sits in the
wide one; a new unit keeps the wide model's fresh initial values for what flows *into* it (so the
new units differ from each other and from zero), and every weight that carries a new unit's value
*out* to something the narrow model had is zero:
  * LSTM gates (eq. 6): rows of W_rec for a new h^pix_{j-1} or a new a_{j-1} unit are zero in the
    old units' gate columns (the new units' own columns keep their initial values);
  * attention (eq. 9): the new units' columns of W_a (Luong's memory layer) are zero, so the
    scores h^pix_j . W_a h^lang_i, hence alpha_ji and c^lang_j, are the old ones;
  * a_j = tanh(W_c [h^pix_j ; c^lang_j]): rows of W_c for new h^pix units are zero in the old
    a_j columns;
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
WIDENABLE_FIELDS = ("decoder_units", "attention_units")


def widening(source: Config, target: Config) -> Dict[str, tuple]:
  """{field: (source value, target value)} of the fields ``target`` widens; raises ConfigError
  if one of them is narrower in ``target``. attention_units counts only where the model has an
  attention layer (conditioning "attention"); elsewhere it changes nothing that is computed."""
  grown = {}
  for field in WIDENABLE_FIELDS:
    if field == "attention_units" and target.conditioning != "attention":
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


def _place(fresh: np.ndarray, old: np.ndarray, rows: np.ndarray,
           cols: Optional[np.ndarray]) -> np.ndarray:
  """``fresh`` with ``old`` written at the index arrays rows x cols (a vector: at rows, with
  cols None)."""
  out = fresh.copy()
  if old.ndim == 1:
    out[rows] = old
  else:
    out[np.ix_(rows, cols)] = old
  return out


def widen_into(source: tf.keras.Model, target: tf.keras.Model) -> None:
  """Sets ``target``'s weights (its fresh initial values for new units) so that it computes what
  ``source`` computes. Both are built AlignPixelRNN models whose configs differ at most in
  WIDENABLE_FIELDS, each no narrower in ``target``."""
  s_config, t_config = source.config, target.config
  widening(s_config, t_config)
  u_old, u_new = s_config.decoder_units, t_config.decoder_units
  attends = s_config.conditioning == "attention"
  a_old = s_config.attention_units if attends else 0
  a_new = t_config.attention_units if attends else 0
  gate_cols = _gate_columns(u_old, u_new)
  old_a, new_h_rows = np.arange(a_old), a_new + np.arange(u_old, u_new)
  old_h_in_rec = a_new + np.arange(u_old)  # W_rec's rows: [a_{j-1} ; h^pix_{j-1}]

  cell = target.pixel_cell

  def widened(variable, fresh: np.ndarray, old: np.ndarray) -> np.ndarray:
    if variable is cell.input_kernel:
      return _place(fresh, old, np.arange(old.shape[0]), gate_cols)
    if variable is cell.bias:
      return _place(fresh, old, gate_cols, None)
    if variable is cell.recurrent_kernel:
      out = _place(fresh, old, np.concatenate([old_a, old_h_in_rec]), gate_cols)
      new_rows = np.concatenate([np.arange(a_old, a_new), new_h_rows])
      out[np.ix_(new_rows, gate_cols)] = 0.0
      return out
    if attends and variable is target.attention_mechanism.memory_layer.kernel:
      out = np.zeros_like(fresh)          # W_a: the new units' key columns stay zero
      out[:, :u_old] = old
      return out
    if attends and variable is target.attention_layer.kernel:
      # W_c's rows: [h^pix_j (decoder_units) ; c^lang_j (annotation_dim)].
      context_rows = np.arange(old.shape[0] - u_old)
      out = _place(fresh, old, np.concatenate([np.arange(u_old), u_new + context_rows]),
                   np.arange(a_old))
      out[np.ix_(np.arange(u_old, u_new), np.arange(a_old))] = 0.0
      return out
    if variable is target.output_layer.kernel:
      out = np.zeros_like(fresh)          # logits ignore the new units at first
      out[:old.shape[0]] = old
      return out
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


