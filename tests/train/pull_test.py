"""The L2 pull toward θ0: both forms, the selective gate, and its fixed point.

Trajectories run through the real ``train_step`` + ``optim.optimizer`` on small
least-squares problems in float64.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import glue_common
from ntkft.models import flatten
from ntkft.models.blocks import block_of_fn
from ntkft.train import optim, pull
from ntkft.train import step as step_lib
from ntkft.train.state import TrainState

layer_block = block_of_fn("layer")  # what the loop uses for per-block pulls


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


# -- A least-squares problem with two parameter blocks ---------------------------

def _linear_outputs(p, p0, frozen, batch, rng):
  """(B, 2) outputs: x @ W of a 'layer' block plus a 'head' bias."""
  return batch["x"] @ p["encoder"]["layer_0"]["w"] + p["head"]["b"]


def _squared_loss(outputs, batch):
  return 0.5 * jnp.mean(jnp.sum(jnp.square(outputs - batch["y"]), -1))


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  params0 = {"encoder": {"layer_0": {"w": rng.normal(size=(3, 2))}},
             "head": {"b": rng.normal(size=(2,))}}
  batches = [{"x": rng.normal(size=(8, 3)), "y": rng.normal(size=(8, 2))} for _ in range(4)]
  return (jax.tree.map(jnp.asarray, params0), [jax.tree.map(jnp.asarray, b) for b in batches])


def _train(params0, batches, steps, tx, lam, pull_form, selective="none",
           outputs_fn=_linear_outputs, loss_fn=_squared_loss):
  state = TrainState(step=jnp.zeros([], jnp.int32), trainable=params0,
                     trainable0=jax.tree.map(jnp.copy, params0), frozen={},
                     opt_state=tx.init(params0), rng=jax.random.PRNGKey(0))
  train_step = jax.jit(functools.partial(
      step_lib.train_step, outputs_fn=outputs_fn, loss_fn=loss_fn, tx=tx,
      pull=_pull(lam, pull_form, selective)))
  path, metrics = [], []
  for s in range(steps):
    state, m = train_step(state, batches[s % len(batches)])
    path.append(state.trainable)
    metrics.append(m)
  return path, metrics


def _pull(lam, form, selective="none"):
  """The one pull object the optimizer and the step both take, as the loop builds it."""
  return pull.Pull(lam, form, selective, layer_block)


def _tx(lr, lam, form, selective="none", name="sgd"):
  return optim.optimizer(name, lr, pull=_pull(lam, form, selective))


def _assert_paths_close(path_a, path_b, rtol=1e-12):
  for a, b in zip(path_a, path_b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-13)


# -- Loss form == decoupled form under SGD --------------------------------------

@pytest.mark.parametrize("selective", ["none", "global", "per_block"])
@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine"])
def test_loss_and_decoupled_forms_agree_under_sgd(schedule, selective):
  params0, batches = _problem()
  lr = 0.3 if schedule == "constant" else optim.schedule(0.3, 20, warmup_steps=5,
                                                         decay="cosine")
  lam = 0.7
  loss_path, loss_m = _train(params0, batches, 20, _tx(lr, lam, "loss"), lam, "loss",
                             selective)
  dec_path, _ = _train(params0, batches, 20, _tx(lr, lam, "decoupled", selective), lam,
                       "decoupled", selective)
  _assert_paths_close(loss_path, dec_path)
  plain_path, _ = _train(params0, batches, 20, _tx(lr, 0.0, "loss"), 0.0, "loss")
  moved = np.abs(np.asarray(plain_path[-1]["head"]["b"] - loss_path[-1]["head"]["b"])).max()
  assert moved > 1e-3  # the pull did act on this trajectory
  if selective != "none":  # and the gate switched both ways along it
    fractions = {float(m["pull_on"]) for m in loss_m}
    assert len(fractions) > 1, fractions


def test_decoupled_form_scales_the_pull_by_the_schedule_value():
  """One step from θ ≠ θ0 with ∇R = 0: the decoupled update is −η_t·λ·(θ − θ0)."""
  params0 = {"w": jnp.asarray([1.0, -2.0])}
  theta = {"w": jnp.asarray([3.0, 0.5])}
  sched = optax.linear_schedule(0.0, 0.4, 4)  # η_t = 0.1·t
  lam = 0.5
  tx = pull.decoupled_pull_to_init(optax.sgd(sched), lam, sched)
  state = tx.init(params0)
  zero = {"w": jnp.zeros(2)}
  for t in range(4):
    updates, state = tx.update(zero, state, theta)
    eta = float(sched(jnp.int32(t)))  # float32 from an int32 count, even under x64
    assert eta == pytest.approx(0.1 * t, rel=1e-6)
    np.testing.assert_allclose(updates["w"], -eta * (lam * (theta["w"] - params0["w"])),
                               rtol=1e-15, atol=1e-15)


def test_forms_differ_under_adam():
  """Adam rescales the in-loss pull but not the decoupled one."""
  params0, batches = _problem()
  lam = 0.7
  a, _ = _train(params0, batches, 5, _tx(0.1, lam, "loss", name="adam"), lam, "loss")
  b, _ = _train(params0, batches, 5, _tx(0.1, lam, "decoupled", name="adam"), lam, "decoupled")
  diff = max(np.abs(np.asarray(x - y)).max()
             for x, y in zip(jax.tree.leaves(a[-1]), jax.tree.leaves(b[-1])))
  assert diff > 1e-4


# -- λ = 0 and λ > 0 --------------------------------------------------------------

@pytest.mark.parametrize("form", ["loss", "decoupled"])
def test_zero_lambda_does_nothing(form):
  params0, batches = _problem()
  with_pull, m = _train(params0, batches, 10, _tx(0.3, 0.0, form, "global"), 0.0, form,
                        "global")
  plain = []
  tx = optax.sgd(0.3)
  p, opt_state = params0, tx.init(params0)
  for s in range(10):
    b = batches[s % 4]
    g = jax.grad(lambda q, b=b: _squared_loss(_linear_outputs(q, None, None, b, None), b))(p)
    updates, opt_state = tx.update(g, opt_state, p)
    p = optax.apply_updates(p, updates)
    plain.append(p)
  _assert_paths_close(with_pull, plain, rtol=1e-13)
  assert "pull_on" not in m[0]
  g = {"w": jnp.asarray([1.0, 2.0])}
  same, _ = pull.pull_gradient(g, {"w": jnp.asarray([5.0, 5.0])}, {"w": jnp.zeros(2)}, 0.0)
  np.testing.assert_array_equal(same["w"], g["w"])


@pytest.mark.parametrize("form", ["loss", "decoupled"])
@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_gd_converges_to_the_pulled_fixed_point(form, lam):
  """GD on ½‖θ − a‖² + λ/2‖θ − θ0‖² converges to (a + λθ0)/(1 + λ)."""
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.normal(size=(4,)))
  params0 = {"encoder": {"layer_0": {"w": jnp.asarray(rng.normal(size=(4,)))}},
             "head": {"b": jnp.asarray(rng.normal(size=(2,)))}}
  target = {"w": a, "b": jnp.asarray([2.0, -1.0])}
  outputs_fn = lambda p, p0, frozen, batch, rng: p
  loss_fn = lambda out, batch: 0.5 * (jnp.sum(jnp.square(out["encoder"]["layer_0"]["w"]
                                                          - batch["w"]))
                                      + jnp.sum(jnp.square(out["head"]["b"] - batch["b"])))
  lr = 0.8 / (1 + lam)  # contraction factor 1 - lr (1 + λ) = 0.2
  path, m = _train(params0, [target], 40, _tx(lr, lam, form), lam, form,
                   outputs_fn=outputs_fn, loss_fn=loss_fn)
  final = path[-1]
  want_w = (a + lam * params0["encoder"]["layer_0"]["w"]) / (1 + lam)
  want_b = (target["b"] + lam * params0["head"]["b"]) / (1 + lam)
  np.testing.assert_allclose(final["encoder"]["layer_0"]["w"], want_w, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(final["head"]["b"], want_b, rtol=1e-12, atol=1e-12)
  # The pull keeps θ strictly closer to θ0 than the unregularized optimum a.
  assert (np.linalg.norm(want_w - params0["encoder"]["layer_0"]["w"])
          < np.linalg.norm(a - params0["encoder"]["layer_0"]["w"]))
  # The reported objective is the regularized one at the fixed point.
  delta2 = float(jnp.sum(jnp.square(want_w - params0["encoder"]["layer_0"]["w"]))
                 + jnp.sum(jnp.square(want_b - params0["head"]["b"])))
  np.testing.assert_allclose(float(m[-1]["objective"]), float(m[-1]["loss"]) + 0.5 * lam * delta2,
                             rtol=1e-10)


# -- The selective gate -------------------------------------------------------------

EPS = 2.0**-40  # 1 ± EPS is exact in float64


@pytest.mark.parametrize("inner,on", [(EPS, 1.0), (0.0, 1.0), (-EPS, 0.0)])
def test_global_gate_switches_on_the_sign_of_the_inner_product(inner, on):
  """⟨∇R, θ − θ0⟩ ≥ 0 → pull on; < 0 → off (eq. 8), to the last bit."""
  grads = {"a": jnp.asarray([1.0, 0.0]), "b": {"c": jnp.asarray([[0.0, 2.0]])}}
  delta = {"a": jnp.asarray([inner + 1.0, 7.0]), "b": {"c": jnp.asarray([[3.0, -0.5]])}}
  # ⟨g, d⟩ = (inner + 1) + (-1) = inner exactly in float64 for these values.
  assert float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                  jax.tree.leaves(delta)))) == inner
  gate = pull.pull_gate(grads, delta, "global", lambda name: "all")
  assert all(float(g) == on for g in jax.tree.leaves(gate))
  params0 = jax.tree.map(jnp.zeros_like, delta)
  new, fraction = pull.pull_gradient(grads, delta, params0, 0.5, "global")
  want = jax.tree.map(lambda g, d: g + 0.5 * on * d, grads, delta)
  for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(want)):
    np.testing.assert_array_equal(x, y)
  assert float(fraction) == on


def test_none_gate_is_always_on():
  grads = {"a": jnp.asarray([1.0])}
  delta = {"a": jnp.asarray([-1.0])}  # inner product < 0, but no selection
  assert float(pull.pull_gate(grads, delta, "none", layer_block)["a"]) == 1.0


def test_per_block_gates_blocks_independently():
  # Block layer_0: leaves with inner products +2 and -1 (sum +1: on for both).
  # Block layer_1: +1 and -3 (sum -2: off). Block head: exactly 0 (on).
  grads = {"encoder": {"layer_0": {"q": jnp.asarray([1.0, 1.0]), "v": jnp.asarray([1.0])},
                       "layer_1": {"q": jnp.asarray([1.0]), "v": jnp.asarray([3.0])}},
           "head": {"kernel": jnp.asarray([1.0, -1.0])}}
  delta = {"encoder": {"layer_0": {"q": jnp.asarray([1.0, 1.0]), "v": jnp.asarray([-1.0])},
                       "layer_1": {"q": jnp.asarray([1.0]), "v": jnp.asarray([-1.0])}},
           "head": {"kernel": jnp.asarray([2.0, 2.0])}}
  gate = flatten(pull.pull_gate(grads, delta, "per_block", layer_block))
  assert {k: float(v) for k, v in gate.items()} == {
      "encoder/layer_0/q": 1.0, "encoder/layer_0/v": 1.0,
      "encoder/layer_1/q": 0.0, "encoder/layer_1/v": 0.0, "head/kernel": 1.0}
  # Globally the sum is 1 - 2 + 0 = -1 < 0: everything off.
  assert all(float(v) == 0.0 for v in jax.tree.leaves(
      pull.pull_gate(grads, delta, "global", layer_block)))
  new, fraction = pull.pull_gradient(grads, delta, jax.tree.map(jnp.zeros_like, delta), 2.0,
                                     "per_block", layer_block)
  new = flatten(new)
  np.testing.assert_array_equal(new["encoder/layer_1/v"], grads["encoder"]["layer_1"]["v"])
  np.testing.assert_array_equal(new["encoder/layer_0/v"], jnp.asarray([1.0 - 2.0]))
  assert float(fraction) == pytest.approx(3 / 5)  # fraction of leaves on


def test_decoupled_gate_uses_the_raw_gradient():
  """Selective decoupled pull: off when ⟨∇R, θ − θ0⟩ < 0, on when ≥ 0."""
  params0 = {"w": jnp.asarray([0.0, 0.0])}
  theta = {"w": jnp.asarray([1.0, 0.0])}
  tx = pull.decoupled_pull_to_init(optax.sgd(0.1), 2.0, 0.1, "global")
  for g0, on in ((-1e-12, 0.0), (0.0, 1.0), (1e-12, 1.0)):
    grads = {"w": jnp.asarray([g0, 5.0])}
    updates, _ = tx.update(grads, tx.init(params0), theta)
    want = -0.1 * grads["w"] - on * 0.1 * 2.0 * (theta["w"] - params0["w"])
    np.testing.assert_allclose(updates["w"], want, rtol=1e-15, atol=0)


def test_bad_arguments():
  with pytest.raises(ValueError, match=r"unknown selective mode 'sometimes'"):
    pull.pull_gate({"a": jnp.ones(1)}, {"a": jnp.ones(1)}, "sometimes", layer_block)
  with pytest.raises(ValueError, match=r"unknown selective mode 'sometimes'"):
    pull.decoupled_pull_to_init(optax.sgd(0.1), 1.0, 0.1, "sometimes")
  tx = pull.decoupled_pull_to_init(optax.sgd(0.1), 1.0, 0.1)
  with pytest.raises(ValueError, match="needs params"):
    tx.update({"a": jnp.ones(1)}, tx.init({"a": jnp.ones(1)}))
  with pytest.raises(ValueError, match=r"unknown pull form 'both'"):
    pull.Pull(0.1, "both")
  with pytest.raises(ValueError, match=r"unknown selective mode 'sometimes'"):
    pull.Pull(0.1, "loss", "sometimes")


def test_one_pull_decides_where_it_applies():
  """The optimizer applies the decoupled form, the step the loss form; λ = 0: neither."""
  for lam, form, in_step, in_optimizer in ((1.0, "loss", True, False),
                                           (1.0, "decoupled", False, True),
                                           (0.0, "loss", False, False),
                                           (0.0, "decoupled", False, False)):
    p = pull.Pull(lam, form)
    assert (p.in_step, p.in_optimizer) == (in_step, in_optimizer)
  # A traced λ (one compiled step for every λ, warm_runs) keeps the loss term in the program.
  assert jax.jit(lambda lam: jnp.asarray(pull.Pull(lam, "loss").in_step))(0.0)
  assert not pull.NO_PULL.in_step and not pull.NO_PULL.in_optimizer


# -- The objective at the default config (gradient clipping on) -------------------

def _default_optim_problem(seed=3):
  """R = ½‖θ − a‖² over two blocks, θ0 and a 9.2 apart (so the default clip acts)."""
  rng = np.random.default_rng(seed)
  tree = lambda scale: {"encoder": {"layer_0": {"w": jnp.asarray(rng.normal(size=4) * scale)}},
                        "head": {"b": jnp.asarray(rng.normal(size=2) * scale)}}
  a, params0 = tree(2.0), tree(1.0)
  outputs_fn = lambda p, p0, frozen, batch, rng: p
  loss_fn = lambda out, batch: 0.5 * sum(jnp.sum(jnp.square(x - y)) for x, y in
                                         zip(jax.tree.leaves(out), jax.tree.leaves(batch)))
  return a, params0, outputs_fn, loss_fn


def _train_default_config(form, selective, lam, steps=2000, lr=0.1):
  """Trains with configs/glue_common.py's optimizer fields, as the loop builds them.

  Only the optimizer (SGD, the theory's setting) and the peak learning rate (0.1,
  so 2,000 steps converge) differ from the default; clip_norm=1.0, warmup and
  linear decay are the default's.
  """
  o = glue_common.get_config().optim
  a, params0, outputs_fn, loss_fn = _default_optim_problem()
  tx = optim.optimizer("sgd", optim.schedule(lr, steps, o.warmup_steps, o.decay),
                       momentum=o.momentum, weight_decay=o.weight_decay,
                       clip_norm=o.clip_norm, grad_accum_steps=o.grad_accum_steps,
                       pull=_pull(lam, form, selective))
  path, metrics = _train(params0, [a], steps, tx, lam, form, selective,
                         outputs_fn=outputs_fn, loss_fn=loss_fn)
  return a, params0, path[-1], metrics, o


def _distance(x, y):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(u) - np.asarray(v)))
                           for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))))


@pytest.mark.parametrize("form", ["loss", "decoupled"])
def test_both_forms_reach_the_minimizer_under_default_clipping(form):
  """argmin ½‖θ − a‖² + λ/2‖θ − θ0‖² = (a + λθ0)/(1 + λ), with clip_norm=1.0 active.

  (Before the decoupled form clipped ∇R + pull together it ended 2.57 away, at
  clip(∇R) = −λ(θ − θ0).)
  """
  lam = 2.0
  a, params0, final, metrics, o = _train_default_config(form, "none", lam)
  assert o.clip_norm == 1.0 and o.name == "adam"  # the default this test is about
  # Clipping acted: the full gradient at θ0 is ‖θ0 − a‖ = 9.2, far above clip_norm.
  assert float(metrics[0]["grad_norm"]) > 5 * o.clip_norm
  want = jax.tree.map(lambda a_, t0: (a_ + lam * t0) / (1 + lam), a, params0)
  assert _distance(final, want) < 1e-10 * _distance(a, params0)


@pytest.mark.parametrize("form", ["loss", "decoupled"])
@pytest.mark.parametrize("selective", ["global", "per_block"])
def test_selective_pulls_end_at_the_minimizer_of_the_risk(form, selective):
  """The selective variants minimize no fixed objective: their rest points have ∇R = 0.

  A rest point with the gate on would need ∇R = −λ(θ − θ0), whose inner product
  with θ − θ0 is negative, which turns the gate off; so SGD ends at a.
  """
  a, params0, final, metrics, _ = _train_default_config(form, selective, 2.0)
  assert _distance(final, a) < 1e-10 * _distance(a, params0)
  if form == "loss":  # the pull did act along the way
    assert any(float(m["pull_on"]) > 0 for m in metrics)


# -- The gate against the geometry it is meant to express ------------------------

def test_gate_is_on_exactly_when_a_small_descent_step_returns_toward_init():
  """Independent statement (Selective Projection Decay): the pull acts while a small
  SGD step on R alone would decrease ‖θ − θ0‖ (the descent direction disagrees
  with the displacement so far), and stays off while it would increase it.

  Checked per block and globally on random draws of θ0, θ and a random quadratic
  risk, by taking the SGD step with optax and measuring the distances.
  """
  rng = np.random.default_rng(7)
  shapes = {"encoder": {"layer_0": {"w": (3, 2)}, "layer_1": {"w": (4,)}}, "head": {"b": (2,)}}
  draw = lambda: jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s)), shapes,
                              is_leaf=lambda s: isinstance(s, tuple))

  def risk(p, target, scales):
    return 0.5 * sum(jnp.sum(jnp.exp(s) * jnp.square(x - t) + jnp.sin(x)) for x, t, s in
                     zip(jax.tree.leaves(p), jax.tree.leaves(target), jax.tree.leaves(scales)))

  tx = optax.sgd(1e-7)

  @jax.jit
  def sgd_step_on_risk(theta, target, scales):
    grads = jax.grad(risk)(theta, target, scales)
    updates, _ = tx.update(grads, tx.init(theta), theta)
    return grads, optax.apply_updates(theta, updates)

  gates = jax.jit(lambda g, d: (pull.pull_gate(g, d, "per_block", layer_block),
                                pull.pull_gate(g, d, "global", layer_block)))

  def block_distances(p, params0):
    out = {}
    for name, x in flatten(jax.tree.map(jnp.subtract, p, params0)).items():
      block = layer_block(name)
      out[block] = out.get(block, 0.0) + float(jnp.sum(jnp.square(x)))
    return out

  on_counts = {"global": 0, "per_block": 0}
  draws = 200
  for _ in range(draws):
    params0, theta = draw(), draw()
    # The risk's minimizer is placed around θ (not around θ0), so ∇R is
    # independent of θ − θ0 and both gate states are common.
    target = jax.tree.map(jnp.add, theta, draw())
    grads, stepped = sgd_step_on_risk(theta, target, draw())
    delta = jax.tree.map(jnp.subtract, theta, params0)
    before, after = block_distances(theta, params0), block_distances(stepped, params0)
    closer = {b: after[b] < before[b] for b in before}
    closer_overall = sum(after.values()) < sum(before.values())

    per_block, whole = gates(grads, delta)
    for name, on in flatten(per_block).items():
      assert float(on) == float(closer[layer_block(name)]), (name, before, after)
    on_counts["per_block"] += int(closer["layer_0"])
    assert all(float(on) == float(closer_overall) for on in jax.tree.leaves(whole))
    on_counts["global"] += int(closer_overall)
  # Both cases occur many times (the test would notice a constant gate).
  assert all(draws // 5 < n < draws - draws // 5 for n in on_counts.values()), on_counts
