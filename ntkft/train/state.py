"""Training state: one explicit pytree of arrays."""
import flax
import jax
import optax

from ntkft.typing import Params


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed whole.

  Attributes:
    step: int32 scalar, number of optimizer steps taken.
    trainable: the parameters that receive gradients (θ).
    trainable0: their pretrained/initial values (θ0): the linearization point of
      the tangent model and the anchor of the L2 pull.
    frozen: every other parameter (never updated).
    opt_state: optimizer state.
    rng: PRNG key; per-step keys are ``fold_in(rng, step)``.
  """
  step: jax.Array
  trainable: Params
  trainable0: Params
  frozen: Params
  opt_state: optax.OptState
  rng: jax.Array
