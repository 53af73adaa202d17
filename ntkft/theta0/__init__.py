"""θ0: the model and its trainable subset at the start of fine-tuning, from a config.

The one place that turns a config's ``task``, ``model``, ``peft`` and ``seed``
fields into (model, trainable θ0, frozen). The training loop
(``ntkft.train.loop``), the kernel report (``ntkft.ntk_report``), layer
selection (``ntkft.select``) and every experiment call :func:`build_theta0`, so
the θ0 at which a kernel is computed is, leaf for leaf, the θ0 a run with the
same fields starts from.

Freshly initialized leaves (head, missing pooler, LoRA factors) are keyed by
their name (``ntkft.models.pretrained.leaf_key``): a leaf's value depends on
the seed and its path only, not on which other adapters the model has. So with
LoRA's ``init="zero_b"`` (B = 0: adapters leave the function unchanged) the
per-layer blocks of a model with LoRA on every layer are the blocks a run with
LoRA on a subset S of the layers starts from.

The kernels at this θ0 are in the package's two modules:
``ntkft.theta0.kernels`` (the θ0-kernel service: per-block NTKs, kind "plain", or the
whole sign kernel, kind "sign", of a config, for the commands and experiments) and
``ntkft.theta0.layer_sets`` (the κ study's untraced per-block plain and sign
kernels, float64 Grams of one Jacobian pass).
"""
import dataclasses
from typing import Callable

from ntkft import data, peft
from ntkft.models import HeadConfig, Model, load_pretrained, read_config, resolve_model_dir
from ntkft.typing import Params


@dataclasses.dataclass(frozen=True)
class Theta0:
  """A model at θ0, its parameters split into what trains and what stays.

  Attributes:
    model: the loaded model (``model.params`` = combine(trainable, frozen)).
    spec: the parameter subset (from ``config.peft``).
    subset: the split (``peft.kernel_subset(model, spec)``): ``trainable``,
      ``frozen``, ``apply_fn``, ``names``, ``ntk_fn(kind)``, ``outputs(x)``.
  """
  model: Model
  spec: peft.PeftSpec
  subset: peft.KernelSubset

  @property
  def trainable(self) -> Params:
    """θ0: the leaves that train (nested dict)."""
    return self.subset.trainable

  @property
  def frozen(self) -> Params:
    """Every other leaf (same nesting, disjoint leaves)."""
    return self.subset.frozen

  @property
  def apply(self) -> Callable:
    """``apply(trainable, x, frozen) -> (B, C)`` outputs, dropout off; the frozen
    weights travel as an argument (not a closure), as the NTK engine and
    ``jax.jit`` need."""
    return self.subset.apply_fn


def build_theta0(config) -> Theta0:
  """(model, trainable θ0, frozen) from ``config``'s task, model, peft and seed fields.

  Reads ``config.task`` (number of outputs), ``config.model.name``,
  ``config.model.pooling``, ``config.model.load_head`` (default True),
  ``config.model.dropout`` (default 0; training only), ``config.peft`` (a
  ``PeftSpec`` as a dict) and ``config.seed`` (every fresh leaf, by name).

  Raises:
    ValueError: an unknown task or peft field (from ``data.get_task`` /
      ``peft.PeftSpec``); errors of ``ntkft.models.load_pretrained``.
  """
  task = data.get_task(config.task)
  spec = peft.PeftSpec.from_config(config.peft)
  m = config.model
  num_layers = read_config(resolve_model_dir(m.name)).num_layers
  model = load_pretrained(m.name, HeadConfig(task.num_labels, m.pooling), seed=config.seed,
                          load_head=m.get("load_head", True),
                          dropout_rate=m.get("dropout", 0.0),
                          adapters=peft.adapters_for(spec, num_layers))
  return Theta0(model=model, spec=spec, subset=peft.kernel_subset(model, spec))
