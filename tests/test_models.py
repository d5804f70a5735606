"""Tests of ssljax.models against numpy references written from the papers.

Large backbones are checked with random parameters drawn here (their shapes
from `jax.eval_shape(model.init, ...)`), which is much cheaper than compiling
their initialisers and tests the forward pass just as well; `init` itself is
tested on the small models.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from scipy.special import erf

from ssljax import models
from ssljax.models.resnet import ResidualBlock

KEY = jax.random.key(0)
EPS_BN, MOMENTUM = 1e-5, 0.9


# ------------------------------------------------------- numpy references ---


def np_conv(x, w, stride, pad):
  """Cross-correlation of NHWC `x` with HWIO `w`, zero padding `pad`."""
  k = w.shape[0]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho = (x.shape[1] + 2 * pad - k) // stride + 1
  wo = (x.shape[2] + 2 * pad - k) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
      out += patch @ w[i, j]
  return out


def np_bn(x, p, s, train):
  """BatchNorm (Ioffe & Szegedy 2015) and its running-statistics update."""
  axes = tuple(range(x.ndim - 1))
  if train:
    mean, var = x.mean(axes), x.var(axes)  # biased variance, as Flax
    new = {"mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * mean,
           "var": MOMENTUM * s["var"] + (1 - MOMENTUM) * var}
  else:
    mean, var, new = s["mean"], s["var"], s
  y = (x - mean) / np.sqrt(var + EPS_BN)
  if "scale" in p:
    y = y * p["scale"] + p["bias"]
  return y, new


def np_conv_bn(x, p, s, stride, train):
  k = p["conv"]["kernel"].shape[0]
  y, new = np_bn(np_conv(x, p["conv"]["kernel"], stride, k // 2), p["bn"],
                 s["bn"], train)
  return y, {"bn": new}


def np_max_pool(x):
  """3×3 max-pool, stride 2, padding 1 (-inf)."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
  out = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf)
  for i in range(3):
    for j in range(3):
      out = np.maximum(out, xp[:, i:i + 2 * ho:2, j:j + 2 * wo:2])
  return out


def relu(x):
  return np.maximum(x, 0)


def by_index(d, prefix):
  """Values of keys prefix0, prefix1, ... in numeric order."""
  return [k for k in sorted(d, key=lambda k: int(k[len(prefix):]))
          if k.startswith(prefix)]


def np_resnet(params, state, x, train, stem):
  """He et al. 2016, Table 1: stem, 4 stages (first block of stages 2-4 has
  stride 2, in its first 3×3 conv), identity or 1×1 projection shortcuts."""
  new = {}
  h, new["stem"] = np_conv_bn(x, params["stem"], state["stem"],
                              2 if stem == "imagenet" else 1, train)
  h = relu(h)
  if stem == "imagenet":
    h = np_max_pool(h)
  new["stages"] = {}
  for s_name in by_index(params["stages"], "stage"):
    new["stages"][s_name] = {}
    for b_name in by_index(params["stages"][s_name], "block"):
      p = params["stages"][s_name][b_name]
      s = state["stages"][s_name][b_name]
      stride = 2 if s_name != "stage1" and b_name == "block0" else 1
      nb = {"layers": {}}
      y = h
      names = by_index(p["layers"], "conv_bn")
      strided = next(n for n in names
                     if p["layers"][n]["conv"]["kernel"].shape[0] == 3)
      for i, n in enumerate(names):
        y, nb["layers"][n] = np_conv_bn(y, p["layers"][n], s["layers"][n],
                                        stride if n == strided else 1, train)
        if i < len(names) - 1:
          y = relu(y)
      shortcut = h
      if "shortcut" in p:
        shortcut, nb["shortcut"] = np_conv_bn(h, p["shortcut"],
                                              s["shortcut"], stride, train)
      h = relu(y + shortcut)
      new["stages"][s_name][b_name] = nb
  return h.mean(axis=(1, 2)), new


def np_layer_norm(x, p, eps):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu(x):
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_vit(params, x, patch, pool, pos=None):
  """Dosovitskiy et al. 2021, eqs. 1-4, pre-LN, with heads of dim D/H."""
  b, hh, ww, c = x.shape
  g_h, g_w = hh // patch, ww // patch
  patches = x.reshape(b, g_h, patch, g_w, patch, c).transpose(0, 1, 3, 2, 4, 5)
  pe = params["patch_embed"]
  tokens = np.einsum("bhwijc,ijcd->bhwd", patches, pe["kernel"]) + pe["bias"]
  tokens = tokens.reshape(b, g_h * g_w, -1)
  if pool == "cls":
    cls = np.broadcast_to(params["cls_token"], (b, 1, tokens.shape[-1]))
    tokens = np.concatenate([cls, tokens], axis=1)
  tokens = tokens + (params["pos_embed"] if pos is None else pos)
  for name in by_index(params["blocks"], "block"):
    p = params["blocks"][name]
    a = p["attn"]
    y = np_layer_norm(tokens, p["norm1"], 1e-6)
    q, k, v = (np.einsum("btd,dhk->bthk", y, a[n]["kernel"]) + a[n]["bias"]
               for n in ("query", "key", "value"))
    logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = np.einsum("bhqs,bshk->bqhk", att, v)
    tokens = tokens + np.einsum("bqhk,hkd->bqd", o, a["out"]["kernel"]) \
        + a["out"]["bias"]
    y = np_layer_norm(tokens, p["norm2"], 1e-6)
    hidden = np_gelu(y @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    tokens = tokens + hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]
  tokens = np_layer_norm(tokens, params["norm"], 1e-6)
  return tokens[:, 0] if pool == "cls" else tokens.mean(1)


def np_mlp(params, state, x, num_layers, act, train):
  """Linear [-BN] - act, ..., Linear [-BN]; returns (y, new BN stats)."""
  new = {}
  layers = params["layers"]
  for i in range(num_layers):
    lin = layers[f"linear{i}"]
    x = x @ lin["kernel"] + lin.get("bias", 0.0)
    if f"bn{i}" in state.get("layers", {}):
      x, new[f"bn{i}"] = np_bn(x, layers.get(f"bn{i}", {}),
                               state["layers"][f"bn{i}"], train)
    if i < num_layers - 1:
      x = act(x)
  return x, {"layers": new} if new else {}


def np_normalize(x, axis=-1):
  return x / np.linalg.norm(x, axis=axis, keepdims=True)


# ----------------------------------------------------------------- helpers ---


def random_like(tree, seed):
  """Numpy leaves with the shapes of `tree`, drawn by leaf name.

  Kernels ~ N(0, 2/fan_in) (activations keep their scale through deep
  nets), BN/LN scale and running variance ~ U(0.5, 1.5), the rest small.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(
          np.float32)
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    return (0.1 * rng.normal(size=shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, tree)


def random_init(model, x, seed=0):
  params, state = jax.eval_shape(model.init, KEY, x)
  return random_like(params, seed), random_like(state, seed + 1)


def as_f64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def assert_close(got, want, rtol=1e-4):
  """Elementwise, relative to the scale of the whole reference array."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * max(1.0, np.abs(want).max()))


def assert_trees_close(got, want, rtol=1e-4):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(functools.partial(assert_close, rtol=rtol), got, want)


def images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def jit_apply(model, train):
  return jax.jit(functools.partial(model.apply, train=train))


def jit_init(model, x, key=KEY):
  return jax.jit(model.init)(key, x)


# ------------------------------------------------------- parameter counts ---


def resnet_param_count(stage_sizes, bottleneck, stem_kernel, in_channels):
  """Counts from He et al. 2016, Table 1: convs without bias, BN gamma+beta."""
  conv = lambda k, cin, cout: k * k * cin * cout + 2 * cout  # noqa: E731
  total = conv(stem_kernel, in_channels, 64)
  features = 64
  for stage, (width, size) in enumerate(zip((64, 128, 256, 512),
                                            stage_sizes)):
    for block in range(size):
      out = 4 * width if bottleneck else width
      if bottleneck:
        total += (conv(1, features, width) + conv(3, width, width)
                  + conv(1, width, out))
      else:
        total += conv(3, features, width) + conv(3, width, width)
      if (stage > 0 and block == 0) or features != out:
        total += conv(1, features, out)
      features = out
  return total


@pytest.mark.parametrize("name, stem, channels, expected", [
    ("resnet18", "imagenet", 3, 11_176_512),
    ("resnet34", "imagenet", 3, 21_284_672),
    ("resnet50", "imagenet", 3, 23_508_032),
    ("resnet18", "cifar", 1, None),
])
def test_resnet_parameter_count(name, stem, channels, expected):
  sizes = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3),
           "resnet50": (3, 4, 6, 3)}[name]
  reference = resnet_param_count(sizes, name == "resnet50",
                                 7 if stem == "imagenet" else 3, channels)
  if expected is not None:
    # torchvision's counts (11,689,512 / 21,797,672 / 25,557,032) minus fc.
    assert reference == expected
  model = models.get(name, stem=stem)
  x = jnp.zeros((2, 32, 32, channels))
  params, state = jax.eval_shape(model.init, KEY, x)
  assert count(params) == reference
  # Running mean and variance for every BN: the same count as gamma + beta.
  bn = sum(a.size for p, a in jax.tree_util.tree_leaves_with_path(params)
           if p[-1].key in ("scale", "bias"))
  assert count(state) == bn
  out = jax.eval_shape(functools.partial(model.apply, train=True), params,
                       state, x)[0]
  assert out.shape == (2, 2048 if name == "resnet50" else 512)


@pytest.mark.parametrize("name, dim, expected", [
    ("vit_tiny", 192, 5_524_416), ("vit_small", 384, 21_665_664)])
def test_vit_parameter_count(name, dim, expected):
  d, tokens = dim, (224 // 16) ** 2 + 1
  block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d \
      + (4 * d * d + 4 * d) + (4 * d * d + d)
  reference = (16 * 16 * 3 * d + d) + d + tokens * d + 12 * block + 2 * d
  # timm's vit_{tiny,small}_patch16_224 (5,717,416 / 22,050,664) minus head.
  assert reference == expected
  params, state = jax.eval_shape(models.get(name).init, KEY,
                                 jnp.zeros((2, 224, 224, 3)))
  assert count(params) == expected and state == {}
  shallow = models.get(name, depth=1, image_size=32)
  x = jnp.zeros((2, 32, 32, 3))
  out = jax.eval_shape(functools.partial(shallow.apply, train=False),
                       *jax.eval_shape(shallow.init, KEY, x), x)[0]
  assert out.shape == (2, dim)


def test_tiny_cnn_parameter_count():
  for channels, width in ((3, 8), (1, 8), (3, 4)):
    model = models.get("tiny_cnn", width=width)
    params, _ = jax.eval_shape(model.init, KEY,
                               jnp.zeros((1, 6, 6, channels)))
    assert count(params) == 9 * channels * width + 9 * width ** 2 + 4 * width
  assert count(jax.eval_shape(models.get("tiny_cnn").init, KEY,
                              jnp.zeros((1, 6, 6, 3)))[0]) == 824


# ------------------------------------------------ forward vs references ---


@pytest.mark.parametrize("name, stem, size, train", [
    ("resnet18", "imagenet", 64, True),
    ("resnet18", "cifar", 8, False),
    ("resnet50", "cifar", 16, True),
])
def test_resnet_matches_numpy(name, stem, size, train):
  model = models.get(name, stem=stem)
  x = images((2, size, size, 3))
  params, state = random_init(model, x)
  out, new_state = jit_apply(model, train)(params, state, x)
  ref, ref_state = np_resnet(as_f64(params), as_f64(state),
                             np.asarray(x, np.float64), train, stem)
  assert out.shape == (2, 2048 if name == "resnet50" else 512)
  assert out.dtype == jnp.float32
  assert_close(out, ref, rtol=2e-4)
  assert_trees_close(new_state, ref_state, rtol=2e-4)
  if not train:
    jax.tree.map(np.testing.assert_array_equal, new_state, state)


@pytest.mark.parametrize("pool, depth", [("cls", 12), ("mean", 2)])
def test_vit_matches_numpy(pool, depth):
  # depth 12: blocks must run 0, 1, ..., 11 (not "block10" after "block1").
  model = models.vit_tiny(patch_size=4, image_size=8, depth=depth, pool=pool)
  x = images((2, 8, 8, 3))
  params, state = random_init(model, x)
  out, new_state = jit_apply(model, True)(params, state, x)
  assert out.shape == (2, 192) and new_state == {}
  assert_close(out, np_vit(as_f64(params), np.asarray(x, np.float64), 4,
                           pool), rtol=2e-4)


def test_vit_position_embedding_is_resized_for_other_sizes():
  model = models.vit_tiny(patch_size=4, image_size=8, depth=1)
  x = images((2, 16, 12, 3))
  params, state = random_init(model, jnp.zeros((2, 8, 8, 3)))
  # A constant patch-grid embedding stays constant when resized, so the
  # 4×3-patch input sees it at every patch; the CLS embedding is kept.
  pos = np.array(params["pos_embed"])
  pos[:, 1:] = pos[:, 1:2]
  params["pos_embed"] = pos
  out, _ = jit_apply(model, False)(params, state, x)
  want_pos = np.concatenate([pos[:, :1]] + [pos[:, 1:2]] * 12, axis=1)
  ref = np_vit(as_f64(params), np.asarray(x, np.float64), 4, "cls",
               pos=want_pos)
  assert_close(out, ref, rtol=2e-4)


def test_tiny_cnn_init_and_bn_train_vs_eval():
  model = models.get("tiny_cnn", width=8)
  x = images((4, 6, 6, 3))
  params, state = model.init(KEY, x)
  # Fresh BN: gamma 1, beta 0, running mean 0, variance 1.
  for leaf_path, leaf in jax.tree_util.tree_leaves_with_path((params, state)):
    name = leaf_path[-1].key
    if name in ("scale", "var"):
      np.testing.assert_array_equal(leaf, 1.0)
    elif name in ("bias", "mean"):
      np.testing.assert_array_equal(leaf, 0.0)
  train_out, train_state = jit_apply(model, True)(params, state, x)
  ref, ref_state = np_resnet_like_tiny(params, state, x, train=True)
  assert_close(train_out, ref)
  assert_trees_close(train_state, ref_state)
  # Eval: running statistics, state returned unchanged, rows independent.
  eval_state = random_like(state, 3)
  eval_out, same = model.apply(params, eval_state, x, train=False)
  assert same is eval_state
  ref, _ = np_resnet_like_tiny(params, eval_state, x, train=False)
  assert_close(eval_out, ref)
  one, _ = jit_apply(model, False)(params, eval_state, x[:1])
  assert_close(one[0], eval_out[0], rtol=1e-5)
  one_train, _ = jit_apply(model, True)(params, state, x[:2])
  assert not np.allclose(one_train[0], train_out[0], atol=1e-3)


def np_resnet_like_tiny(params, state, x, train):
  params, state = as_f64(params), as_f64(state)
  h = np.asarray(x, np.float64)
  new = {}
  for name, stride in (("conv_bn0", 1), ("conv_bn1", 2)):
    h, new[name] = np_conv_bn(h, params[name], state[name], stride, train)
    h = relu(h)
  return h.mean((1, 2)), new


def test_init_is_deterministic_jittable_and_he_normal():
  model = models.tiny_cnn(width=64)
  x = jnp.zeros((1, 4, 4, 3))
  p0, _ = model.init(KEY, x)
  p0_again, _ = jit_init(model, x)
  p1, _ = jit_init(model, x, jax.random.key(1))
  assert_trees_close(p0_again, p0, rtol=1e-6)
  assert not np.allclose(p0["conv_bn1"]["conv"]["kernel"],
                         p1["conv_bn1"]["conv"]["kernel"])
  # He et al. 2015 on fan-out (torchvision): std = sqrt(2 / (k·k·C_out)).
  kernel = np.asarray(p0["conv_bn1"]["conv"]["kernel"])
  np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 64)), rtol=0.03)
  assert abs(kernel.mean()) < 0.01


@pytest.mark.parametrize("bottleneck", [False, True])
def test_zero_init_residual_block_starts_as_identity(bottleneck):
  width = 4
  features = 4 * width if bottleneck else width
  block = ResidualBlock(features, width, 1, bottleneck=bottleneck,
                        zero_init_last=True, rngs=nnx.Rngs(0))
  last = block.layers["conv_bn2" if bottleneck else "conv_bn1"]
  np.testing.assert_array_equal(last.bn.scale[...], 0.0)
  x = images((2, 5, 5, features))
  np.testing.assert_allclose(block(x), np.maximum(x, 0), atol=1e-6)
  normal = ResidualBlock(features, width, 1, bottleneck=bottleneck,
                         rngs=nnx.Rngs(0))
  assert not np.allclose(normal(x), np.maximum(x, 0), atol=1e-3)


# ---------------------------------------------------------------- sharding ---


def test_bn_statistics_are_global_on_a_sharded_batch():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  model = models.get("tiny_cnn")
  x = images((16, 6, 6, 3))
  params, state = random_init(model, x)
  state = random_like(state, 1)
  want, want_state = jit_apply(model, True)(params, state, x)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  got, got_state = jit_apply(model, True)(params, state, xs)
  assert len(xs.sharding.device_set) == 8
  assert_close(got, want, rtol=1e-5)
  assert_trees_close(got_state, want_state, rtol=1e-5)
  # Per-device statistics would differ from the global ones.
  local, _ = jit_apply(model, True)(params, state, x[:2])
  assert not np.allclose(local, want[:2], atol=1e-3)


def test_bn_axis_name_under_shard_map_equals_global():
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  model = models.compose(models.tiny_cnn(axis_name="data"),
                         projector=models.projector(None, 8, 4,
                                                    axis_name="data"))
  reference = models.compose(models.tiny_cnn(),
                             projector=models.projector(None, 8, 4))
  x = images((16, 6, 6, 3))
  params, state = random_init(reference, x)

  def per_device(p, s, xb):
    return model.apply(p, s, xb, train=True)

  sharded = jax.jit(jax.shard_map(per_device, mesh=mesh,
                                  in_specs=(P(), P(), P("data")),
                                  out_specs=(P("data"), P())))
  got, got_state = sharded(params, state, x)
  want, want_state = jit_apply(reference, True)(params, state, x)
  assert_trees_close(got, want, rtol=1e-5)
  assert_trees_close(got_state, want_state, rtol=1e-5)


# ------------------------------------------------------------------- heads ---


def test_projector_matches_numpy():
  head = models.projector(6, 10, 4, num_layers=3, last_bn=True)
  x = images((5, 6))
  params, state = random_init(head, x)
  # Hidden linears before BN and the last one before the affine-free BN
  # have no bias; the last BN has no gamma/beta.
  assert sorted(params["layers"]) == ["bn0", "bn1", "linear0", "linear1",
                                      "linear2"]
  assert all("bias" not in params["layers"][f"linear{i}"] for i in range(3))
  state = random_like(state, 2)
  state_copy = jax.tree.map(np.copy, state)
  for train in (True, False):
    out, new_state = head.apply(params, state, x, train=train)
    # Pure: numpy inputs are not written to.
    jax.tree.map(np.testing.assert_array_equal, state, state_copy)
    ref, ref_state = np_mlp(as_f64(params), as_f64(state),
                            np.asarray(x, np.float64), 3, relu, train)
    assert out.shape == (5, 4)
    assert_close(out, ref)
    if train:
      assert_trees_close(new_state, ref_state)
      # The final BN without affine standardises every output unit.
      np.testing.assert_allclose(np.asarray(out).mean(0), 0.0, atol=1e-5)
    else:
      assert new_state is state


def test_projector_without_bn_and_predictor():
  head = models.projector(6, 10, 4, num_layers=1)
  params, state = jax.eval_shape(head.init, KEY, jnp.zeros((2, 6)))
  assert state == {} and sorted(params["layers"]["linear0"]) == ["bias",
                                                                 "kernel"]
  pred = models.predictor(None, 8, 3)
  x = images((4, 5))
  params, state = random_init(pred, x)
  out, new_state = jit_apply(pred, True)(params, state, x)
  ref, ref_state = np_mlp(as_f64(params), as_f64(state),
                          np.asarray(x, np.float64), 2, relu, True)
  assert_close(out, ref)
  assert_trees_close(new_state, ref_state)
  assert "bias" in params["layers"]["linear1"]


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_head_matches_numpy_and_weight_norm(norm_last_layer):
  head = models.dino_head(6, 12, hidden_dim=10, bottleneck_dim=5,
                          norm_last_layer=norm_last_layer)
  x = images((3, 6))
  params, state = random_init(head, x)  # g ~ U(0.5, 1.5) if learned
  assert state == {}
  last = params[models.DINO_LAST_LAYER]
  assert sorted(last) == (["kernel"] if norm_last_layer
                          else ["kernel", "scale"])
  out, _ = jit_apply(head, True)(params, state, x)
  p = as_f64(params)
  z, _ = np_mlp(p["mlp"], {}, np.asarray(x, np.float64), 3, np_gelu, True)
  v = p["last_layer"]["kernel"]
  g = p["last_layer"].get("scale", np.ones((1, 12)))  # [1, K] as weight_g
  w = g * v / np.sqrt((v ** 2).sum(0))
  assert_close(out, np_normalize(z) @ w)
  # Columns of the effective weight have norm g.
  eff = models.weight_norm(last["kernel"], last.get("scale"))
  np.testing.assert_allclose(np.linalg.norm(eff, axis=0), g[0], rtol=1e-5)
  # |logit_k| <= g_k since both factors are normalised.
  assert np.all(np.abs(out) <= g * (1 + 1e-5))


@pytest.mark.parametrize("make", [
    lambda: models.projector(4, 6, 3, num_layers=2, last_bn=True,
                             param_dtype=jnp.float64),
    lambda: models.dino_head(4, 5, hidden_dim=6, bottleneck_dim=3,
                             norm_last_layer=False, param_dtype=jnp.float64),
    lambda: models.prototypes(4, 5, param_dtype=jnp.float64),
])
def test_head_gradients(make):
  with jax.enable_x64(True):
    head = make()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)))
    params, state = jax.tree.map(jnp.asarray,
                                 as_f64(random_init(head, x)))

    def f(p, x):
      # sin: a plain sum of BN outputs without affine is constant.
      return jnp.sum(jnp.sin(head.apply(p, state, x, train=True)[0]))

    check_grads(jax.jit(f), (params, x), order=1, modes=["rev"])


def test_dino_head_learned_scale_starts_at_one():
  head = models.DINOHead(3, 4, hidden_dim=4, bottleneck_dim=2,
                         norm_last_layer=False, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(head.last_layer.scale[...], 1.0)


def test_dino_head_zero_bottleneck_is_finite():
  head = models.dino_head(4, 6, hidden_dim=8, bottleneck_dim=3)
  params, state = jax.eval_shape(head.init, KEY, jnp.zeros((2, 4)))
  params = jax.tree.map(lambda a: jnp.zeros(a.shape), params)

  def total(p):
    return head.apply(p, state, jnp.ones((2, 4)), train=True)[0].sum()

  out, grads = jax.jit(jax.value_and_grad(total))(params)
  assert np.all(np.isfinite(out))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_prototypes_and_normalize_prototypes():
  head = models.prototypes(5, 7)
  x = images((3, 5))
  params, state = random_init(head, x)
  assert list(params) == ["kernel"] and params["kernel"].shape == (5, 7)
  normed = models.normalize_prototypes(params)
  np.testing.assert_allclose(np.linalg.norm(normed["kernel"], axis=0), 1.0,
                             rtol=1e-6)
  scores, _ = jit_apply(head, True)(normed, state, x)
  ref = np_normalize(np.asarray(x, np.float64)) @ np.asarray(
      normed["kernel"], np.float64)
  assert_close(scores, ref, rtol=1e-5)
  np.testing.assert_array_less(np.abs(scores), 1 + 1e-5)
  raw = models.prototypes(5, 7, normalize_input=False)
  scores, _ = jit_apply(raw, False)(params, state, x)
  assert_close(scores, np.asarray(x) @ np.asarray(params["kernel"]), 1e-5)
  # Inside a composed tree only the prototypes' kernel changes.
  tree = {"backbone": {"kernel": params["kernel"]}, "prototypes": params}
  new = models.normalize_prototypes(tree)
  np.testing.assert_array_equal(new["backbone"]["kernel"], params["kernel"])
  np.testing.assert_allclose(new["prototypes"]["kernel"], normed["kernel"])


# ----------------------------------------------------------------- compose ---


def test_compose_equals_parts_and_is_jittable():
  backbone = models.get("tiny_cnn")
  proj = models.projector(None, 16, 6, num_layers=2)
  pred = models.predictor(6, 16, 6)
  protos = models.prototypes(None, 5)
  model = models.compose(backbone, projector=proj, predictor=pred,
                         prototypes=protos)
  x = images((4, 6, 6, 3))
  params, state = model.init(KEY, x)
  assert sorted(params) == ["backbone", "predictor", "projector",
                            "prototypes"]
  out, new_state = jit_apply(model, True)(params, state, x)
  assert sorted(out) == ["features", "prediction", "projection", "scores"]

  @jax.jit
  def by_parts(params, state, x):
    f, s_b = backbone.apply(params["backbone"], state["backbone"], x,
                            train=True)
    z, s_p = proj.apply(params["projector"], state["projector"], f,
                        train=True)
    q, s_q = pred.apply(params["predictor"], state["predictor"], z,
                        train=True)
    c, _ = protos.apply(params["prototypes"], state["prototypes"], z,
                        train=True)
    return ({"features": f, "projection": z, "prediction": q, "scores": c},
            {"backbone": s_b, "projector": s_p, "predictor": s_q,
             "prototypes": {}})

  want, want_state = by_parts(params, state, x)
  assert_trees_close(out, want, rtol=1e-5)
  assert_trees_close(new_state, want_state, rtol=1e-5)
  eval_out, same = model.apply(params, state, x, train=False)
  assert same["backbone"] is state["backbone"]
  assert eval_out["features"].shape == (4, 8)


def test_compose_prototypes_on_features_and_dino_head():
  model = models.compose(models.get("tiny_cnn"),
                         prototypes=models.prototypes(8, 3))
  x = images((2, 6, 6, 3))
  params, state = random_init(model, x)
  out, _ = jit_apply(model, False)(params, state, x)
  assert sorted(out) == ["features", "scores"]
  ref = np_normalize(np.asarray(out["features"])) @ np.asarray(
      params["prototypes"]["kernel"])
  assert_close(out["scores"], ref, rtol=1e-5)
  dino = models.compose(models.vit_tiny(patch_size=4, image_size=8, depth=1),
                        projector=models.dino_head(None, 10, hidden_dim=8,
                                                   bottleneck_dim=4))
  params, state = jax.eval_shape(dino.init, KEY, jnp.zeros((2, 8, 8, 3)))
  assert params["projector"]["last_layer"]["kernel"].shape == (4, 10)
  out, _ = jax.eval_shape(functools.partial(dino.apply, train=True), params,
                          state, jnp.zeros((3, 16, 16, 3)))
  assert out["projection"].shape == (3, 10)


# ---------------------------------------------------------- user modules ---


class LinenNet(nn.Module):
  """A user's own Linen model with BatchNorm and a `train` argument."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return jnp.mean(nn.relu(x), axis=(1, 2))


class NNXNet(nnx.Module):
  """A user's own NNX model with BatchNorm."""

  def __init__(self, in_channels, *, rngs):
    self.conv = nnx.Conv(in_channels, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)

  def __call__(self, x):
    return jnp.mean(nnx.relu(self.bn(self.conv(x))), axis=(1, 2))


def check_protocol(model, x):
  """Shared checks of the Model protocol; returns the (train, eval) outputs."""
  params, state = model.init(KEY, x)
  assert jax.tree.leaves(state), "the custom models have BN statistics"
  out, new_state = jit_apply(model, True)(params, state, x)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(state),
                                                  jax.tree.leaves(new_state)))
  eval_out, same = jit_apply(model, False)(params, new_state, x)
  jax.tree.map(np.testing.assert_array_equal, same, new_state)
  # Through compose with a built-in head, and under jax.grad.
  full = models.compose(model, projector=models.projector(None, 8, 3))
  p, s = random_init(full, x)
  grads = jax.jit(jax.grad(lambda p: full.apply(p, s, x, train=True)[0][
      "projection"].sum()))(p)
  assert jax.tree.structure(grads) == jax.tree.structure(p)
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads))
  return params, state, out, new_state, eval_out


def test_custom_linen_model_plugs_in():
  module = LinenNet()
  x = images((3, 5, 5, 2))
  params, state, out, new_state, eval_out = check_protocol(
      models.from_linen(module), x)
  # The plain Linen way.
  want, updates = jax.jit(functools.partial(
      module.apply, train=True, mutable=["batch_stats"]))(
          {"params": params, **state}, x)
  assert_close(out, want, rtol=1e-5)
  assert_trees_close(new_state, dict(updates), rtol=1e-5)
  want_eval = jax.jit(functools.partial(module.apply, train=False))(
      {"params": params, **new_state}, x)
  assert_close(eval_out, want_eval, rtol=1e-5)


@pytest.mark.parametrize("as_instance", [True, False])
def test_custom_nnx_model_plugs_in(as_instance):
  x = images((3, 5, 5, 2))
  if as_instance:
    net = NNXNet(2, rngs=nnx.Rngs(3))
    model = models.from_nnx(net)
  else:
    model = models.from_nnx(lambda rngs, x: NNXNet(x.shape[-1], rngs=rngs))
  params, state, out, new_state, eval_out = check_protocol(model, x)
  # The plain NNX way: merge the states into the module and call it.
  reference = nnx.merge(nnx.graphdef(NNXNet(2, rngs=nnx.Rngs(0))), params,
                        state)
  assert_close(out, reference(x), rtol=1e-5)
  reference.eval()
  assert_close(eval_out, reference(x), rtol=1e-5)
  if as_instance:
    # An instance keeps its own weights; the builder draws from the key.
    assert_close(params["conv"]["kernel"], net.conv.kernel[...], 0)
  else:
    other, _ = model.init(jax.random.key(5), x)
    assert not np.allclose(other["conv"]["kernel"], params["conv"]["kernel"])


def test_params_are_plain_pytrees_for_tree_map_and_orbax(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  model = models.compose(models.get("tiny_cnn"),
                         projector=models.projector(None, 16, 6))
  params, state = model.init(KEY, images((4, 6, 6, 3)))
  assert all(type(d) is dict for d in (params, state, params["backbone"]))
  assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(params))
  doubled = jax.tree.map(lambda a: 2 * a, params)
  assert_close(doubled["projector"]["layers"]["linear1"]["kernel"],
               2 * params["projector"]["layers"]["linear1"]["kernel"], 0)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", {"params": params, "state": state})
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "ckpt")
  assert_trees_close(restored, {"params": params, "state": state}, 0)


# ------------------------------------------------------------------- dtypes ---


@pytest.mark.parametrize("build, shape", [
    (lambda **kw: models.tiny_cnn(**kw), (4, 6, 6, 3)),
    (lambda **kw: models.vit_tiny(patch_size=4, image_size=8, depth=1, **kw),
     (2, 8, 8, 3)),
    (lambda **kw: models.projector(6, 8, 4, last_bn=True, **kw), (4, 6)),
    (lambda **kw: models.dino_head(6, 8, hidden_dim=8, bottleneck_dim=4,
                                   **kw), (4, 6)),
    (lambda **kw: models.prototypes(6, 5, **kw), (4, 6)),
])
def test_bfloat16_compute_with_float32_params(build, shape):
  x = images(shape)
  f32 = build()
  bf16 = build(dtype=jnp.bfloat16)
  params, state = random_init(bf16, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((params, state)))
  want, _ = jit_apply(f32, True)(params, state, x)
  got, new_state = jit_apply(bf16, True)(params, state, x)
  assert got.dtype == jnp.bfloat16 and want.dtype == jnp.float32
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(new_state))
  assert_close(got, want, rtol=5e-2)


def test_resnet_bfloat16_output_dtype():
  model = models.resnet18(stem="cifar", dtype=jnp.bfloat16)
  x = jnp.zeros((2, 8, 8, 3))
  params, state = jax.eval_shape(model.init, KEY, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
  out, new_state = jax.eval_shape(functools.partial(model.apply, train=True),
                                  params, state, x)
  assert out.dtype == jnp.bfloat16
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(new_state))


# -------------------------------------------------------------- bad inputs ---


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="name.*resnet18.*tiny_cnn.*vit_tiny"):
    models.get("resnet19")


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {}), ("tiny_cnn", {}), ("vit_tiny", {"patch_size": 4})])
def test_wrong_rank_image_raises(name, kwargs):
  model = models.get(name, **kwargs)
  with pytest.raises(ValueError, match=f"{name}.*`x`.*rank 4"):
    model.init(KEY, jnp.zeros((2, 8, 8)))
  with pytest.raises(ValueError, match="`x`.*rank 4"):
    model.apply({}, {}, jnp.zeros((8, 8)), train=False)


def test_mismatched_params_raise():
  model = models.get("tiny_cnn")
  params, state = model.init(KEY, jnp.zeros((2, 6, 6, 3)))
  with pytest.raises(ValueError, match=r"`params\['conv_bn0'\]"):
    model.apply(params, state, jnp.zeros((2, 6, 6, 1)), train=True)
  with pytest.raises(ValueError, match="`model_state`.*structure"):
    model.apply(params, {}, jnp.zeros((2, 6, 6, 3)), train=True)
  composed = models.compose(model, projector=models.projector(8, 4, 2))
  with pytest.raises(ValueError, match="`params` must have keys"):
    composed.apply(params, state, jnp.zeros((2, 6, 6, 3)), train=True)


def test_bad_head_inputs_and_hyperparameters_raise():
  head = models.projector(6, 8, 4)
  with pytest.raises(ValueError, match="projector.*`x`.*last dimension 6"):
    head.init(KEY, jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match="projector.*`x`.*rank 2"):
    head.init(KEY, jnp.zeros((2, 3, 6)))
  with pytest.raises(ValueError, match="`in_dim`"):
    models.dino_head(0, 4)
  with pytest.raises(ValueError, match="`num_prototypes`"):
    models.prototypes(4, 0).init(KEY, jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="`num_layers`"):
    models.projector(4, 4, 4, num_layers=0).init(KEY, jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="`predictor` needs a `projector`"):
    models.compose(models.get("tiny_cnn"), predictor=models.predictor(8, 8, 8))


def test_bad_backbone_hyperparameters_raise():
  with pytest.raises(ValueError, match="resnet50.*`stem`"):
    models.get("resnet50", stem="tiny")
  with pytest.raises(ValueError, match="vit_small.*`pool`"):
    models.get("vit_small", pool="max")
  with pytest.raises(ValueError, match="`image_size`.*multiple.*`patch_size`"):
    models.get("vit_tiny", image_size=30, patch_size=16)
  with pytest.raises(ValueError, match="`width`"):
    models.get("tiny_cnn", width=0)
  model = models.get("vit_tiny", patch_size=4, image_size=8, depth=1)
  params, state = jax.eval_shape(model.init, KEY, jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="`x`.*multiples of patch_size 4"):
    jax.eval_shape(functools.partial(model.apply, train=False), params, state,
                   jnp.zeros((1, 10, 8, 3)))


def test_small_cnn_layers_run_in_index_order_and_count_parameters():
  # 11 layers: string order would run conv_bn10 before conv_bn2 and fail on
  # channel mismatch, so a correct output shape proves index order.
  widths = tuple(range(1, 12))
  model = models.get("small_cnn", widths=widths, strides=(1,) * 11)
  x = jnp.ones((2, 8, 8, 1))
  params, state = model.init(KEY, x)
  out, _ = model.apply(params, state, x, train=True)
  assert out.shape == (2, 11)
  # conv weights 9·c_in·c_out (no bias, BN follows) + BN scale and bias.
  channels = (1, *widths)
  expected = sum(9 * a * b + 2 * b for a, b in zip(channels, channels[1:]))
  assert count(params) == expected
  with pytest.raises(ValueError, match="strides"):
    models.get("small_cnn", widths=(4, 8), strides=(1,)).init(KEY, x)


def test_small_cnn_flatten_keeps_the_last_map_in_layout_order():
  x = jax.random.normal(KEY, (2, 28, 28, 1))
  flat = models.get("small_cnn", widths=(4, 8), strides=(2, 2),
                    pooling="flatten")
  avg = models.get("small_cnn", widths=(4, 8), strides=(2, 2))
  params, state = flat.init(KEY, x)
  out, _ = flat.apply(params, state, x, train=False)
  pooled, _ = avg.apply(params, state, x, train=False)
  assert out.shape == (2, 7 * 7 * 8)
  # Row-major [h, w, c]: averaging the h·w positions gives the pooled net.
  np.testing.assert_allclose(out.reshape(2, 49, 8).mean(axis=1), pooled,
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="pooling"):
    models.get("small_cnn", pooling="max").init(KEY, x)
