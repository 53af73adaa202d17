"""ntkft.theta0: runs, kernels and layer studies start from one θ0, leaf for leaf."""
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import ntk_spectrum
from experiments import layer_study
from ntkft import peft, theta0
from ntkft.models import HeadConfig, flatten, load_pretrained
from ntkft.theta0 import kernels as theta0_kernels
from ntkft.train import loop
from tests import test_util

NUM_LAYERS = 3
LAYERS = (1, 2)      # the layer set S of the run
SEED = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return test_util.write_tiny_bert_checkpoint(tmp_path_factory.mktemp("tiny") / "bert",
                                              num_layers=NUM_LAYERS, hidden=16)


def run_config(model_dir, layers=LAYERS):
  """A 2-step fine-tuning run of LoRA on ``layers`` + the head (configs/glue_common.py)."""
  return layer_study.finetune_config(
      {"mode": "nonlinear", "model": {"name": str(model_dir)},
       "data": {"n_train": 16, "n_eval": 16, "max_len": 32, "buckets": (32,),
                "batch_size": 8, "eval_batch_size": 16},
       "optim": {"warmup_steps": 0},
       "train": {"steps": 2, "ckpt_every": 1, "log_every": 1, "progress": False}},
      "sst2", layers, SEED)


def kernel_config(model_dir, layers=LAYERS):
  """The ntk_report config of the kernel of S (LoRA on S + the head, same seed)."""
  config = ntk_spectrum.get_config("runlocal")
  config.model.name = str(model_dir)
  config.peft.layers = tuple(layers)
  config.peft.head = True
  config.seed = SEED
  config.n = 6
  config.data.max_len = 24
  return config


def test_run_starts_from_the_theta0_of_the_kernel_of_s(model_dir, tmp_path):
  loop.run(run_config(model_dir), str(tmp_path))
  state = ocp.StandardCheckpointer().restore(tmp_path / "ckpt" / "1" / "default")
  run_theta0 = flatten(state["trainable0"])
  kernel_theta0 = flatten(theta0.build_theta0(kernel_config(model_dir)).trainable)
  assert sorted(run_theta0) == sorted(kernel_theta0)
  assert any("head/" in k for k in run_theta0)
  assert {k.split("/")[1] for k in run_theta0 if k.startswith("encoder/")} == {
      f"layer_{i}" for i in LAYERS}
  for name, value in kernel_theta0.items():
    np.testing.assert_array_equal(run_theta0[name], np.asarray(value), err_msg=name)
  # The layer studies' kernel model (LoRA on every layer) holds the same leaves of S.
  all_layers = flatten(theta0.build_theta0(run_config(model_dir, range(NUM_LAYERS))).trainable)
  assert len(all_layers) > len(kernel_theta0)
  for name, value in kernel_theta0.items():
    np.testing.assert_array_equal(np.asarray(all_layers[name]), np.asarray(value), err_msg=name)


def test_a_leafs_init_does_not_depend_on_the_other_adapters(model_dir):
  head = HeadConfig(num_labels=3, pooling="cls")

  def fresh(layers, seed=SEED):
    spec = peft.PeftSpec(layers=layers, targets=("query", "value", "ffn_in"), init="gaussian")
    model = load_pretrained(model_dir, head, peft.adapters_for(spec, NUM_LAYERS), seed=seed)
    return {k: np.asarray(v) for k, v in flatten(model.params).items()
            if k in model.newly_initialized}

  one, every = fresh((1,)), fresh(None)
  assert {k for k in one if "lora" in k} < {k for k in every if "lora" in k}
  assert any(k.startswith("pooler/") for k in one) and any(k.startswith("head/") for k in one)
  for name, value in one.items():
    np.testing.assert_array_equal(every[name], value, err_msg=name)
  # Not one stream reused: same-shaped leaves of different names differ, and the
  # seed matters.
  a = [every[f"encoder/layer_{i}/attention/query/lora_a"] for i in range(NUM_LAYERS)]
  assert not np.array_equal(a[0], a[1])
  assert not np.array_equal(every["encoder/layer_0/attention/query/lora_a"],
                            every["encoder/layer_0/attention/value/lora_a"])
  assert not np.array_equal(fresh((1,), seed=SEED + 1)["head/kernel"], one["head/kernel"])


def test_layer_blocks_of_the_all_layer_model_are_the_kernels_of_s(model_dir):
  """With B = 0 the other adapters leave f unchanged: K_{layer_i} on the
  all-layer model equals the block of the model with LoRA on S only."""
  config_s = kernel_config(model_dir)
  config_all = kernel_config(model_dir, range(NUM_LAYERS))
  start_s = theta0.build_theta0(config_s)
  sample = theta0_kernels.kernel_sample(config_s, start_s)
  only_s = theta0_kernels.per_block_kernels(start_s, sample, "layer")
  every = theta0_kernels.per_block_kernels(theta0.build_theta0(config_all), sample, "layer")
  assert sorted(only_s.kernels) == ["head"] + [f"layer_{i}" for i in LAYERS]
  for name, k in only_s.kernels.items():
    scale = np.abs(k).max()
    assert scale > 0
    np.testing.assert_allclose(every.kernels[name], k, rtol=0, atol=1e-5 * scale, err_msg=name)
  np.testing.assert_array_equal(every.fx0, only_s.fx0)


def test_layer_study_kernels_require_zero_b(model_dir, tmp_path):
  finetune = {"model": {"name": str(model_dir)}, "peft": {"init": "gaussian"}}
  with pytest.raises(ValueError, match="init='zero_b'"):
    layer_study.task_kernels(finetune, "sst2", 4, SEED, tmp_path)
