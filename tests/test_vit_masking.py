"""The ViT's masking paths and the mask samplers of ssljax.models.masking.

The ViT: sin-cos embeddings against MAE's numpy formula, the mask-token and
token-dropping paths against the plain forward, padding that no token sees,
stochastic depth, remat, layer indices, the presets' sizes. The samplers:
the invariants of each (ratios, block counts and sizes, aspect ranges,
context/target disjointness, truncation to the batch's smallest context),
their independence of the sharding, and bad arguments.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from flax import nnx

from ssljax import models, train
from ssljax.models.vit import VisionTransformer

KEY = jax.random.key(0)


def images(shape, seed=1):
  return jax.random.normal(jax.random.key(seed), shape)


def tiny_vit(**kw):
  return models.vit_tiny(patch_size=2, image_size=8, depth=2, **kw)


def init(model, x):
  return model.init(KEY, x)


def assert_close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a, np.float64),
                             np.asarray(b, np.float64), rtol=tol, atol=tol)


# --------------------------------------------------------- the ViT parts ---


def mae_sincos(dim, grid_size):
  """MAE's util/pos_embed.get_2d_sincos_pos_embed, transcribed."""
  grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float64),
                              np.arange(grid_size, dtype=np.float64)))
  grid = grid.reshape(2, 1, grid_size, grid_size)

  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])],
                        axis=1)


def test_sincos_matches_mae():
  assert_close(models.sincos_position_embedding(5, 5, 16), mae_sincos(16, 5))
  # A 2×3 grid, row-major, the column's half first: patch 5 = (1, 2).
  rect = models.sincos_position_embedding(2, 3, 8)
  one_d = lambda p: [math.sin(p), math.sin(p / 100), math.cos(p),  # noqa
                     math.cos(p / 100)]
  assert_close(rect[5], one_d(2) + one_d(1))
  with pytest.raises(ValueError, match="multiple of 4"):
    models.sincos_position_embedding(2, 2, 6)


def test_sincos_vit_has_no_position_parameters_and_uses_mae_embedding():
  model = tiny_vit(pos_embed="sincos")
  x = images((2, 8, 8, 3))
  params, state = init(model, x)
  assert "pos_embed" not in params
  # The first block sees patch embedding + e; with the blocks' output
  # projections zeroed the tokens pass through unchanged up to the norm.
  zero = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.zeros_like(a) if any(
          getattr(k, "key", None) in ("out", "fc2") for k in path) else a,
      params)
  tokens, _ = model.apply(zero, state, x, train=False, tokens=True)
  patches = models.patchify(x, 2) @ zero["patch_embed"]["kernel"].reshape(
      -1, 192) + zero["patch_embed"]["bias"]
  pre = np.concatenate([zero["cls_token"][0].repeat(2, 0)[:, None],
                        patches + mae_sincos(192, 4)], axis=1)
  mean = pre.mean(-1, keepdims=True)
  normed = (pre - mean) / np.sqrt(pre.var(-1, keepdims=True) + 1e-6)
  assert_close(tokens, normed * zero["norm"]["scale"] + zero["norm"]["bias"],
               tol=1e-4)


def test_no_mask_and_keep_all_give_the_plain_forward():
  """Nothing masked: the mask-token path and the token-dropping path give
  the plain encoder's tokens."""
  model = tiny_vit(mask_token=True)
  x = images((3, 8, 8, 3))
  params, state = init(model, x)
  plain, _ = model.apply(params, state, x, train=False, tokens=True)
  masked, _ = model.apply(params, state, x, train=False, tokens=True,
                          mask=jnp.zeros((3, 16), bool))
  dropped, _ = model.apply(params, state, x, train=False, tokens=True,
                           keep=jnp.tile(jnp.arange(16), (3, 1)))
  assert_close(masked, plain)
  assert_close(dropped, plain)


def test_keep_runs_the_encoder_on_the_visible_tokens_only():
  model = tiny_vit(pos_embed="sincos")
  x = images((2, 8, 8, 3))
  params, state = init(model, x)
  keep = jnp.array([[0, 5, 7], [2, 3, 15]])
  tokens, _ = model.apply(params, state, x, train=False, keep=keep,
                          tokens=True)
  assert tokens.shape == (2, 4, 192)
  # Changing a dropped patch changes nothing; changing a kept one does.
  for patch, changes in ((1, False), (5, True)):
    row, col = divmod(patch, 4)
    y = x.at[0, 2 * row:2 * row + 2, 2 * col:2 * col + 2].add(5.0)
    again, _ = model.apply(params, state, y, train=False, keep=keep,
                           tokens=True)
    assert bool(jnp.any(jnp.abs(again[0] - tokens[0]) > 1e-3)) == changes


def test_masked_patches_see_the_mask_token_not_the_image():
  model = tiny_vit(mask_token=True)
  x = images((1, 8, 8, 3))
  params, state = init(model, x)
  params["mask_token"] = jnp.full((1, 1, 192), 0.3)
  mask = jnp.zeros((1, 16), bool).at[0, 6].set(True)
  out, _ = model.apply(params, state, x, train=False, mask=mask)
  y = x.at[0, 2:4, 4:6].set(9.0)  # patch 6 = row 1, column 2
  again, _ = model.apply(params, state, y, train=False, mask=mask)
  assert_close(again, out)
  with pytest.raises(ValueError, match="mask_token=True"):
    tiny_vit().apply(*init(tiny_vit(), x), x, train=False, mask=mask)


def test_padding_marked_invalid_changes_nothing():
  """I-JEPA's padded contexts: tokens marked invalid are not attended to,
  and mean pooling skips them."""
  model = tiny_vit(pool="mean", pos_embed="sincos")
  x = images((2, 8, 8, 3))
  params, state = init(model, x)
  keep = jnp.array([[0, 3, 9], [4, 5, 6]])
  short, _ = model.apply(params, state, x, train=False, keep=keep,
                         tokens=True)
  pooled, _ = model.apply(params, state, x, train=False, keep=keep)
  padded = jnp.concatenate([keep, jnp.array([[1, 2], [1, 0]])], axis=1)
  valid = jnp.arange(5) < 3
  valid = jnp.broadcast_to(valid, (2, 5))
  long, _ = model.apply(params, state, x, train=False, keep=padded,
                        keep_valid=valid, tokens=True)
  long_pooled, _ = model.apply(params, state, x, train=False, keep=padded,
                               keep_valid=valid)
  assert_close(long[:, :3], short)
  assert_close(long_pooled, pooled)
  with pytest.raises(ValueError, match="keep_valid"):
    model.apply(params, state, x, train=False, keep=keep,
                keep_valid=jnp.ones((2, 4), bool))


def test_token_predictor_treats_its_tokens_as_a_set():
  """The MAE decoder's raster-order sequence and this predictor's
  [context, queries] differ by a permutation only: permuting the context
  leaves the predictions alone, permuting the targets permutes them, and
  padded queries change nothing."""
  head = models.token_predictor(8, 6, dim=16, depth=2, num_heads=2,
                                cls_token=True)
  context = images((2, 4, 8))  # CLS + 3 tokens
  params, state = head.init(KEY, context)
  ctx, tgt = jnp.array([[0, 2, 5], [1, 3, 4]]), jnp.array([[1, 3], [0, 2]])
  apply = functools.partial(head.apply, params, state, train=False,
                            grid=(2, 3))
  out, _ = apply(context, context_index=ctx, target_index=tgt)
  order = jnp.array([0, 3, 1, 2])
  shuffled, _ = apply(context[:, order], context_index=ctx[:, order[1:] - 1],
                      target_index=tgt)
  assert_close(shuffled, out)
  swapped, _ = apply(context, context_index=ctx, target_index=tgt[:, ::-1])
  assert_close(swapped, out[:, ::-1])
  padded, _ = apply(context, context_index=ctx,
                    target_index=jnp.concatenate([tgt, tgt[:, :1]], 1),
                    target_valid=jnp.array([[True, True, False]] * 2))
  assert_close(padded[:, :2], out)
  with pytest.raises(ValueError, match="CLS"):
    apply(context[:, 1:], context_index=ctx, target_index=tgt)


def test_stochastic_depth_in_train_mode_only():
  model = tiny_vit(drop_path_rate=0.5)
  x = images((8, 8, 8, 3))
  params, state = init(model, x)
  assert set(state) == {"drop_rngs"}
  a, state_a = model.apply(params, state, x, train=True)
  b, _ = model.apply(params, state_a, x, train=True)
  again, _ = model.apply(params, state, x, train=True)
  assert_close(again, a)  # the RNG stream lives in model_state: resumable
  assert not np.allclose(a, b)
  assert int(state_a["drop_rngs"]["count"]) == 1
  e1, kept = model.apply(params, state, x, train=False)
  e2, _ = model.apply(params, state_a, x, train=False)
  assert_close(e1, e2)
  assert kept is state


def test_drop_path_keeps_the_expectation():
  x = jnp.ones((20000, 3))
  y = models.drop_path(x, 0.3, jax.random.key(3))
  kept = np.asarray(y[:, 0] > 0)
  assert abs(kept.mean() - 0.7) < 0.02
  assert_close(y[kept], 1 / 0.7)
  assert abs(float(y.mean()) - 1.0) < 0.03


def test_drop_path_rates_grow_linearly_over_the_blocks():
  # From 0 at the first block (timm, DeiT, iBOT).
  vit = VisionTransformer(3, dim=8, depth=5, num_heads=2, patch_size=2,
                          image_size=4, drop_path_rate=0.4,
                          rngs=nnx.Rngs(0))
  rates = [vit.blocks[f"block{i}"].drop_path for i in range(5)]
  assert_close(rates, [0.0, 0.1, 0.2, 0.3, 0.4])


def test_remat_gives_the_same_values_and_gradients():
  x = images((2, 8, 8, 3))
  plain, remat = tiny_vit(), tiny_vit(remat=True)
  params, state = init(plain, x)

  def loss(model, p):
    return jnp.sum(model.apply(p, state, x, train=True)[0] ** 2)

  for a, b in zip(jax.jit(jax.value_and_grad(functools.partial(loss, plain)))(
      params), jax.jit(jax.value_and_grad(functools.partial(loss, remat)))(
          params)):
    jax.tree.map(assert_close, a, b)
  # And the blocks are rematerialised: the gradient's program says so.
  for model, wanted in ((plain, False), (remat, True)):
    program = str(jax.make_jaxpr(jax.grad(functools.partial(loss, model)))(
        params))
    assert ("remat" in program or "checkpoint" in program) == wanted


def test_layer_ids_for_layer_wise_decay():
  model = tiny_vit(mask_token=True)
  params, _ = init(model, images((1, 8, 8, 3)))
  ids = models.layer_ids(params)
  flat = {jax.tree_util.keystr(k): v
          for k, v in jax.tree_util.tree_leaves_with_path(ids)}
  for path, want in flat.items():
    if path.startswith("['blocks']['block"):
      assert want == int(path[len("['blocks']['block")]) + 1
    elif path.startswith("['norm']"):
      assert want == 3
    else:
      assert want == 0, path
  with pytest.raises(ValueError, match="blocks"):
    models.layer_ids({"kernel": 1})


@pytest.mark.parametrize("name, expected", [
    ("vit_tiny", 5_524_416), ("vit_small", 21_665_664),
    ("vit_base", 85_798_656)])
def test_preset_sizes(name, expected):
  d, heads = models.VIT_SIZES[name]
  block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d \
      + (4 * d * d + 4 * d) + (4 * d * d + d)
  tokens = (224 // 16) ** 2 + 1
  assert (16 * 16 * 3 * d + d) + d + tokens * d + 12 * block + 2 * d \
      == expected
  params, _ = jax.eval_shape(getattr(models, name)().init, KEY,
                             jnp.zeros((1, 224, 224, 3)))
  assert sum(a.size for a in jax.tree.leaves(params)) == expected
  assert params["blocks"]["block0"]["attn"]["query"]["kernel"].shape == (
      d, heads, d // heads)


def test_bfloat16_masked_forward_is_close():
  x = images((2, 8, 8, 3))
  f32, bf16 = tiny_vit(mask_token=True), tiny_vit(mask_token=True,
                                                  dtype=jnp.bfloat16)
  params, state = init(f32, x)
  mask = jnp.zeros((2, 16), bool).at[:, :5].set(True)
  want, _ = f32.apply(params, state, x, train=True, mask=mask)
  got, _ = bf16.apply(params, state, x, train=True, mask=mask)
  assert got.dtype == jnp.bfloat16
  assert_close(got, want, tol=0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pos_embed="rope"), "pos_embed"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(pool="max"), "pool"),
])
def test_bad_vit_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tiny_vit(**kwargs)


# ------------------------------------------------------------ patches ---


def test_patchify_is_maes_order_and_unpatchify_inverts_it():
  x = np.asarray(images((2, 4, 6, 3)))
  got = models.patchify(x, 2)
  # MAE: "nchpwq->nhwpqc" on NCHW images.
  nchw = x.transpose(0, 3, 1, 2).reshape(2, 3, 2, 2, 3, 2)
  want = np.einsum("nchpwq->nhwpqc", nchw).reshape(2, 6, 12)
  assert_close(got, want)
  assert_close(models.unpatchify(got, 2, 4, 6), x)
  with pytest.raises(ValueError, match="multiples"):
    models.patchify(x, 4)


# ----------------------------------------------------------- MAE masks ---


def test_random_masking_invariants():
  m = models.random_masking(KEY, 64, 49, 0.75)
  assert m.keep.shape == (64, 12) and m.masked.shape == (64, 37)
  both = np.sort(np.concatenate([m.keep, m.masked], 1), 1)
  np.testing.assert_array_equal(both, np.tile(np.arange(49), (64, 1)))
  assert np.all(np.diff(m.keep, axis=1) > 0)
  for row, masked in zip(np.asarray(m.mask), np.asarray(m.masked)):
    np.testing.assert_array_equal(np.nonzero(row)[0], masked)
  assert not np.any(np.take_along_axis(np.asarray(m.mask), m.keep, 1))
  # Uniform: every patch is masked about 75% of the time.
  counts = np.asarray(models.random_masking(KEY, 4000, 49, 0.75).mask).mean(0)
  assert np.all(np.abs(counts - 37 / 49) < 0.04)
  for ratio in (1.0, -0.1, 0.99):
    with pytest.raises(ValueError, match="ratio"):
      models.random_masking(KEY, 2, 49, ratio)


# --------------------------------------------------------- BEiT / iBOT ---


def _boxes(mask):
  """Connected rectangles are hard to split from a union; bounding box of
  the masked patches."""
  rows, cols = np.nonzero(mask)
  return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def official_block_mask(rand, height, width, target, low, log_aspect):
  """iBOT's `ImageFolderMask` block masking (BEiT's generator), in Python
  with its `random` calls: blocks until `target` patches or a stall."""
  mask = np.zeros((height, width), bool)
  count = 0
  while count < target:
    budget = target - count
    delta = 0
    for _ in range(10):
      area = rand.uniform(low, budget)
      aspect = math.exp(rand.uniform(*log_aspect))
      h = int(round(math.sqrt(area * aspect)))
      w = int(round(math.sqrt(area / aspect)))
      if w < width and h < height:
        top, left = rand.randint(0, height - h), rand.randint(0, width - w)
        new = h * w - mask[top:top + h, left:left + w].sum()
        if 0 < new <= budget:
          mask[top:top + h, left:left + w] = True
          delta += new
      if delta > 0:
        break
    if delta == 0:
      break
    count += delta
  return mask


@pytest.mark.parametrize("target, low", [(75, 16), (30, 4), (98, 16)])
def test_block_mask_counts_follow_the_official_generator(target, low):
  import random
  rand = random.Random(0)
  log_aspect = (math.log(0.3), math.log(1 / 0.3))
  want = np.array([official_block_mask(rand, 14, 14, target, low,
                                       log_aspect).sum()
                   for _ in range(400)])
  got = np.asarray(jax.jit(jax.vmap(lambda k: models.block_mask(
      k, 14, 14, target, min_block_patches=low)))(
          jax.random.split(KEY, 400)).sum((1, 2)))
  # Never past the target, sometimes short (a stall): as often as the
  # official generator (which draws areas below the smallest block once the
  # budget is smaller, as Python's random.uniform(a, b) with a > b does).
  assert got.max() <= target
  for q in (10, 50, 90):
    assert abs(np.percentile(got, q) - np.percentile(want, q)) <= 1, q
  assert abs(got.mean() - want.mean()) < 0.6
  assert abs((got >= target).mean() - (want >= target).mean()) < 0.08


def test_block_mask_blocks_follow_the_aspect_range():
  # A budget of one smallest block: mostly a single rectangle (a block of
  # 15 may be topped up by a tiny one), whose sides follow the aspect range
  # up to the rounding of each side.
  singles = 0
  masks = jax.jit(jax.vmap(lambda k: models.block_mask(
      k, 14, 14, 16, min_block_patches=16, aspect=(0.5, 2.0))))(
          jax.random.split(jax.random.key(1), 40))
  for one in np.asarray(masks):
    h, w = _boxes(one)
    if one.sum() != h * w:
      continue
    singles += 1
    assert (h - 0.5) / (w + 0.5) <= 2.0 and (h + 0.5) / (w - 0.5) >= 0.5
    assert 9 <= h * w <= 16  # √(16·a)·√(16/a) = 16, rounded sides
  assert singles >= 30


def test_block_mask_stops_when_no_block_fits():
  # Blocks must be narrower than the grid: a 2×2 grid with blocks of 4
  # patches (2×2) holds none, and the generator gives up.
  mask = models.block_mask(KEY, 2, 2, 3, min_block_patches=4,
                           aspect=(1.0, 1.0))
  assert int(mask.sum()) == 0


def test_ibot_masks_mix_unmasked_images_and_ratios():
  masks = np.asarray(models.ibot_masks(KEY, 400, 14, 14, ratio=(0.0, 0.3),
                                       ratio_var=(0.0, 0.2)))
  fractions = masks.mean(1)
  unmasked = fractions == 0
  assert abs(unmasked.mean() - 0.5) < 0.08
  # The others: ratio U(0.1, 0.5), reached or missed by a stalled block.
  assert abs(np.median(fractions[~unmasked]) - 0.3) < 0.05
  assert fractions.max() <= 0.5
  rand = np.asarray(models.ibot_masks(KEY, 50, 7, 7, ratio=(0.3,),
                                      shape="rand"))
  np.testing.assert_array_equal(rand.sum(1), int(0.3 * 49))


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=(0.3,), ratio_var=(0.4,)), "ratio_var"),
    (dict(ratio=(0.3, 0.1), ratio_var=(0.0,)), "equal length"),
    (dict(ratio=(0.9,), ratio_var=(0.2,)), "ratio_var"),
    (dict(shape="circle"), "shape"),
])
def test_ibot_masks_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.ibot_masks(KEY, 2, 4, 4, **kwargs)


# ------------------------------------------------------------- I-JEPA ---


def _as_masks(indices, valid, n):
  out = np.zeros(indices.shape[:-1] + (n,), bool)
  for i in np.ndindex(indices.shape[:-1]):
    out[i][indices[i][valid[i]]] = True
  return out


def test_multiblock_invariants():
  h = w = 14
  m = models.multiblock_masks(jax.random.key(3), 32, h, w)
  m = jax.tree.map(np.asarray, m)
  targets = _as_masks(m.targets, m.target_valid, h * w)  # [T, B, N]
  context = _as_masks(m.context, m.context_valid, h * w)  # [B, N]
  # 4 target blocks per image, all of one size h·w per batch.
  sizes = targets.sum(-1)
  assert targets.shape[:2] == (4, 32) and len(set(sizes.ravel())) == 1
  area = sizes[0, 0]
  for t in range(4):
    for b in range(32):
      bh, bw = _boxes(targets[t, b].reshape(h, w))
      assert bh * bw == area  # a rectangle
      # Scale 0.15-0.2 of 196 patches, sides from aspect 0.75-1.5 rounded.
      assert int(0.15 * 196) - 2 * max(bh, bw) <= area <= int(0.2 * 196) + (
          bh + bw)
      assert 0.75 * (bw - 0.5) <= bh + 0.5 and bh - 0.5 <= 1.5 * (bw + 0.5)
  # Context: disjoint from every target, more than min_keep patches, all
  # truncated to the batch's smallest context, in raster order.
  assert not np.any(context & targets.any(0))
  counts = m.context_valid.sum(-1)
  assert len(set(counts)) == 1 and counts[0] > 10
  assert np.all(np.diff(m.context, axis=1)[m.context_valid[:, 1:]] > 0)


def test_multiblock_truncates_per_group_and_allows_overlap():
  m = models.multiblock_masks(KEY, 8, 14, 14, group_size=4)
  counts = np.asarray(m.context_valid.sum(-1))
  assert len(set(counts[:4])) == 1 and len(set(counts[4:])) == 1
  overlap = models.multiblock_masks(KEY, 8, 14, 14, allow_overlap=True)
  context = _as_masks(*map(np.asarray, overlap[:2]), 196)
  targets = _as_masks(*map(np.asarray, overlap[2:]), 196)
  assert np.any(context & targets.any(0))  # 85-100% squares overlap


def test_samplers_do_not_depend_on_the_sharding():
  """Under jit over 8 devices, and inside shard_map with axis_name, every
  device gets its rows of the single-device masks (and I-JEPA's smallest
  context is global)."""
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  key = jax.random.key(5)
  samplers = {
      "random": lambda b, **kw: models.random_masking(key, b, 16, 0.5, **kw),
      "ibot": lambda b, **kw: models.ibot_masks(key, b, 6, 6, **kw),
      "ijepa": lambda b, **kw: models.multiblock_masks(
          key, b, 8, 8, min_keep=4, **kw),
  }
  for name, sample in samplers.items():
    single = jax.jit(lambda: sample(16))()
    global_view = jax.jit(lambda: sample(16), out_shardings=NamedSharding(
        mesh, P()))()
    jax.tree.map(np.testing.assert_array_equal, global_view, single)
    per_device = jax.jit(jax.shard_map(
        lambda: sample(2, axis_name="data"), mesh=mesh, in_specs=(),
        out_specs=jax.tree.map(
            lambda x: P(*([None] * (x.ndim - 2)), "data", None)
            if name == "ijepa" and x.ndim == 3 else P("data"), single)))()
    jax.tree.map(np.testing.assert_array_equal, per_device, single)


def test_max_block_area_bounds_every_draw():
  for scale, aspect in (((0.15, 0.2), (0.75, 1.5)), ((0.85, 1.0), (1, 1))):
    bound = models.max_block_area(14, 14, scale, aspect)
    u = np.random.default_rng(0).random(5000)
    h, w = (np.asarray(a) for a in jax.jit(jax.vmap(
        lambda u: models.masking._block_size(u, scale, aspect, 14, 14)))(u))
    assert (h * w).max() <= bound
    # The official sizes, from Python floats (`_sample_block_size`).
    for v in u[:200]:
      s = scale[0] + v * (scale[1] - scale[0])
      keep = int(196 * s)
      a = aspect[0] + v * (aspect[1] - aspect[0])
      want = (min(round(math.sqrt(keep * a)), 13),
              min(round(math.sqrt(keep / a)), 13))
      got = models.masking._block_size(v, scale, aspect, 14, 14, xp=np)
      assert tuple(int(g) for g in got) == want


@pytest.mark.parametrize("kwargs, match", [
    (dict(target_scale=(0.3, 0.2)), "target_scale"),
    (dict(context_scale=(0.5, 1.5)), "context_scale"),
    (dict(num_targets=0), "num_targets"),
    (dict(group_size=3), "group_size"),
    (dict(aspect=(0.0, 1.0)), "aspect"),
])
def test_multiblock_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.multiblock_masks(KEY, 8, 14, 14, **kwargs)


def test_initialisation_is_timms_untruncated_normal_002():
  """timm's `trunc_normal_(std=.02)` cuts at ±2 absolute (100 std): the
  kernels, embeddings and tokens are N(0, 0.02²), not cut at ±2σ (whose std
  would be 0.0176), and the biases start at 0."""
  vit = models.vit_small(patch_size=16, image_size=32, depth=2)
  params, _ = vit.init(KEY, jnp.zeros((1, 32, 32, 3)))
  block = params["blocks"]["block0"]
  for kernel in (block["attn"]["query"]["kernel"], block["fc1"]["kernel"],
                 params["patch_embed"]["kernel"], params["cls_token"]):
    kernel = np.asarray(kernel)
    np.testing.assert_allclose(kernel.std(), 0.02, rtol=0.05)
    if kernel.size > 10_000:
      assert np.abs(kernel).max() > 2.5 * 0.02
  np.testing.assert_array_equal(block["attn"]["query"]["bias"], 0.0)


def test_weight_decay_skips_every_bias_and_norm_of_the_vit():
  """The official rule (rank 1 or a name ending in ".bias"): the attention's
  [heads, head_dim] biases and the LayerNorms are not decayed, the kernels,
  the tokens and the position embedding are."""
  vit = models.vit_tiny(patch_size=4, image_size=8, depth=1)
  params, _ = jax.eval_shape(vit.init, KEY, jnp.zeros((1, 8, 8, 3)))
  decayed = {jax.tree_util.keystr(path): flag for path, flag in
             jax.tree_util.tree_leaves_with_path(train.decay_mask(params))}
  shapes = {jax.tree_util.keystr(path): leaf.shape for path, leaf in
            jax.tree_util.tree_leaves_with_path(params)}
  assert shapes["['blocks']['block0']['attn']['query']['bias']"] == (3, 64)
  for name, flag in decayed.items():
    want = not (name.endswith("['bias']") or len(shapes[name]) <= 1)
    assert flag == want, name
  assert decayed["['cls_token']"] and decayed["['pos_embed']"]
  assert not decayed["['blocks']['block0']['norm1']['scale']"]
