"""Heads that SSL methods put on a backbone: projector, predictor, DINO head,
prototypes. Each factory returns a `Model` mapping [B, in_dim] -> [B, out].

`in_dim=None` reads the input dimension from the example input at `init`, so a
method need not know its backbone's feature size.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from ssljax._common import check_positive, l2_normalize, to_compute
from ssljax.models._layers import (Dtype, batch_norm, check_last_dim,
                                   normal_002)
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model

PyTree = Any

# Path key of the DINO head's weight-normalised last layer, and of the
# prototypes in a `compose`d model: methods freeze them by these names.
DINO_LAST_LAYER = "last_layer"
PROTOTYPES = "prototypes"


class MLP(nnx.Module):
  """(Linear [-BN] - activation) × (num_layers − 1), Linear [, BN].

  `use_bn` puts BN after the hidden linear layers; `last_bn` puts a BN
  without learnable affine after the output layer, as SimSiam and MoCo v3
  projectors do. A linear layer followed by BN has no bias (BN's beta, or the
  mean subtraction, cancels it). Parameters: `layers/linear{i}`,
  `layers/bn{i}`.
  """

  def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *,
               num_layers: int = 2, use_bn: bool = True,
               last_bn: bool = False,
               activation: Callable[[jax.Array], jax.Array] = nnx.relu,
               kernel_init: Optional[Callable] = None,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim),
                        ("out_dim", out_dim), ("num_layers", num_layers)):
      check_positive(value, name, "MLP")
    linear_kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if kernel_init is not None:
      linear_kw["kernel_init"] = kernel_init
    bn_kw = dict(dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
                 rngs=rngs)
    self.in_dim = in_dim
    self.activation = activation
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers = {}
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
      last = i == num_layers - 1
      with_bn = last_bn if last else use_bn
      layers[f"linear{i}"] = nnx.Linear(d_in, d_out, use_bias=not with_bn,
                                        **linear_kw)
      if with_bn:
        layers[f"bn{i}"] = batch_norm(d_out, affine=not last, **bn_kw)
    self.layers = nnx.Dict(layers)
    self.num_layers = num_layers

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_dim, 2, "MLP")
    for i in range(self.num_layers):
      x = self.layers[f"linear{i}"](x)
      if f"bn{i}" in self.layers:
        x = self.layers[f"bn{i}"](x)
      if i < self.num_layers - 1:
        x = self.activation(x)
    return x


def weight_norm(kernel: jax.Array, scale: Optional[jax.Array] = None
                ) -> jax.Array:
  """W = g · V / ||V||, each column (output unit) normalised over the inputs.

  Salimans & Kingma 2016, "Weight Normalization"; DINO's last layer. g = 1
  when `scale` is None.

  Args:
    kernel: V, [in_dim, out_dim].
    scale: g, [out_dim] or [1, out_dim], or None.

  Returns:
    W, [in_dim, out_dim], whose column j has norm g_j.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.models import weight_norm
    >>> w = weight_norm(jnp.array([[3.0], [4.0]]), jnp.array([10.0]))
    >>> print(w.ravel().tolist())
    [6.0, 8.0]
  """
  w = l2_normalize(kernel, axis=0)
  return w if scale is None else w * scale


class WeightNormLinear(nnx.Module):
  """Linear layer without bias whose weight is `weight_norm(kernel, scale)`.

  `learn_scale=False` fixes g to 1 and has no `scale` parameter (DINO's
  `norm_last_layer=True`).
  """

  def __init__(self, in_dim: int, out_dim: int, *, learn_scale: bool = False,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = nnx.Param(normal_002(rngs.params(), (in_dim, out_dim),
                                         param_dtype))
    # g as [1, out_dim], the official `weight_g` ([out_dim, 1] in PyTorch's
    # layout): rank 2, so weight decay reaches it as there.
    self.scale = (nnx.Param(jnp.ones((1, out_dim), param_dtype))
                  if learn_scale else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    scale = None if self.scale is None else self.scale[...]
    w = weight_norm(self.kernel[...], scale)
    x, w = promote_dtype((x, w), dtype=self.dtype)
    return x @ w


class DINOHead(nnx.Module):
  """DINO projection head (Caron et al. 2021, "Emerging Properties in
  Self-Supervised Vision Transformers").

  MLP (Linear-GELU × (num_layers − 1), Linear to the bottleneck), l2
  normalisation, then a weight-normalised linear layer to `out_dim` logits:

      z = MLP(x) / ||MLP(x)||,   logits = z · g · V / ||V||.

  The last layer's parameters live under `last_layer` (`kernel` V and, when
  `norm_last_layer=False`, `scale` g).
  """

  def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 2048,
               bottleneck_dim: int = 256, num_layers: int = 3,
               norm_last_layer: bool = True, dtype: Optional[Dtype] = None,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    check_positive(out_dim, "out_dim", "DINOHead")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.mlp = MLP(in_dim, hidden_dim, bottleneck_dim, num_layers=num_layers,
                   use_bn=False, activation=_gelu,
                   kernel_init=normal_002, **kw)
    self.last_layer = WeightNormLinear(bottleneck_dim, out_dim,
                                       learn_scale=not norm_last_layer, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    z = self.mlp(x)
    # Normalised in float32 even for bf16 activations.
    z = l2_normalize(to_compute(z)).astype(z.dtype)
    return self.last_layer(z)


def _gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, PyTorch's nn.GELU default that DINO uses."""
  return nnx.gelu(x, approximate=False)


class Prototypes(nnx.Module):
  """K prototype vectors c_k (columns of `kernel`, [in_dim, K]); scores z·c_k.

  A linear layer without bias (SwAV, Caron et al. 2020). With
  `normalize_input` (default) the input is l2-normalised first, as SwAV
  normalises its projection; the prototypes themselves are normalised by the
  method with `normalize_prototypes`.
  """

  def __init__(self, in_dim: int, num_prototypes: int, *,
               normalize_input: bool = True, dtype: Optional[Dtype] = None,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    check_positive(num_prototypes, "num_prototypes", "Prototypes")
    self.in_dim = in_dim
    self.normalize_input = normalize_input
    self.dtype = dtype
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(
        rngs.params(), (in_dim, num_prototypes), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_dim, 2, "Prototypes")
    if self.normalize_input:
      x = l2_normalize(to_compute(x)).astype(x.dtype)
    x, kernel = promote_dtype((x, self.kernel[...]), dtype=self.dtype)
    return x @ kernel


def normalize_prototypes(params: PyTree) -> PyTree:
  """Returns `params` with every prototype (column of the kernel) unit-norm.

  SwAV normalises the prototypes before each step, c_k ← c_k / ||c_k||, so the
  scores are cosine similarities. Pure: the caller stores the result.

  Args:
    params: the `prototypes` head's params `{"kernel": [D, K]}`, or any tree
      holding them under a "prototypes" key (as `compose` builds it).

  Returns:
    The same tree, prototype kernels normalised, other leaves untouched.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.models import normalize_prototypes
    >>> p = {"backbone": {"kernel": jnp.full((2, 1), 3.0)},
    ...      "prototypes": {"kernel": jnp.array([[3.0, 0.0], [4.0, 2.0]])}}
    >>> new = normalize_prototypes(p)
    >>> print(jnp.linalg.norm(new["prototypes"]["kernel"], axis=0))
    [1. 1.]
    >>> print(new["backbone"]["kernel"].tolist())
    [[3.0], [3.0]]
  """

  def normalize(path, leaf):
    keys = [getattr(k, "key", None) for k in path]
    is_prototypes = keys == ["kernel"] or (
        keys[-1:] == ["kernel"] and PROTOTYPES in keys)
    return l2_normalize(leaf, axis=0) if is_prototypes else leaf

  return jax.tree_util.tree_map_with_path(normalize, params)


# -------------------------------------------------------------- factories ---


def _head(name: str, in_dim: Optional[int], make: Callable) -> Model:
  """A `Model` of the NNX head `make(in_dim, rngs)` on [B, in_dim] inputs."""
  if in_dim is not None:
    check_positive(in_dim, "in_dim", name)
  return from_builder(
      lambda rngs, x: make(check_last_dim(x, in_dim, 2, name), rngs),
      name=name)


def projector(in_dim: Optional[int], hidden_dim: int, out_dim: int,
              num_layers: int = 2, last_bn: bool = False, *,
              dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
              axis_name: Optional[str] = None) -> Model:
  """MLP projector g(h): (Linear-BN-ReLU) × (num_layers − 1), Linear [, BN].

  SimCLR (Chen et al. 2020): 2 layers; BYOL (Grill et al. 2020): 2 layers,
  hidden 4096, out 256; Barlow Twins (Zbontar et al. 2021): 3 layers of 8192;
  SimSiam (Chen & He 2021) and MoCo v3: `last_bn=True` (BN without affine).

  Args:
    in_dim: input (feature) dimension, or None to read it at `init`.
    hidden_dim: width of the hidden layers.
    out_dim: projection dimension.
    num_layers: number of linear layers (>= 1; 1 is a single linear map).
    last_bn: add a BN without learnable affine after the output layer.
    dtype: computation dtype; param_dtype: parameter dtype.
    axis_name: BN mapped axis under `shard_map`/pmap (see `resnet18`).

  Returns:
    A `Model` [B, in_dim] -> [B, out_dim]; BN statistics in `model_state`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import projector
    >>> head = projector(None, 16, 4, num_layers=3, last_bn=True)
    >>> params, state = head.init(jax.random.key(0), jnp.ones((2, 8)))
    >>> print(sorted(params["layers"]), sorted(state["layers"]))
    ['bn0', 'bn1', 'linear0', 'linear1', 'linear2'] ['bn0', 'bn1', 'bn2']
  """
  return _head("projector", in_dim, lambda d, rngs: MLP(
      d, hidden_dim, out_dim, num_layers=num_layers, last_bn=last_bn,
      dtype=dtype, param_dtype=param_dtype, axis_name=axis_name, rngs=rngs))


def predictor(in_dim: Optional[int], hidden_dim: int, out_dim: int, *,
              dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
              axis_name: Optional[str] = None) -> Model:
  """BYOL/SimSiam predictor q: Linear-BN-ReLU-Linear.

  BYOL: 256 → 4096 → 256; SimSiam: 2048 → 512 → 2048 (a bottleneck).
  Same as `projector(in_dim, hidden_dim, out_dim, num_layers=2)`.

  Args:
    in_dim: input dimension (the projection), or None to read it at `init`.
    hidden_dim: hidden width.
    out_dim: output dimension (usually = in_dim).
    dtype, param_dtype, axis_name: as in `projector`.

  Returns:
    A `Model` [B, in_dim] -> [B, out_dim].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import predictor
    >>> head = predictor(4, 8, 4)
    >>> params, state = head.init(jax.random.key(0), jnp.ones((2, 4)))
    >>> out, _ = head.apply(params, state, jnp.ones((2, 4)), train=False)
    >>> print(out.shape)
    (2, 4)
  """
  return projector(in_dim, hidden_dim, out_dim, num_layers=2, last_bn=False,
                   dtype=dtype, param_dtype=param_dtype, axis_name=axis_name)


def dino_head(in_dim: Optional[int], out_dim: int, hidden_dim: int = 2048,
              bottleneck_dim: int = 256, num_layers: int = 3,
              norm_last_layer: bool = True, *, dtype: Optional[Dtype] = None,
              param_dtype: Dtype = jnp.float32) -> Model:
  """DINO head (see `DINOHead`): MLP, l2-normalise, weight-normed last layer.

  The last layer is `params["last_layer"]` (`DINO_LAST_LAYER`): `kernel` V
  [bottleneck_dim, out_dim] and, if `norm_last_layer` is False, `scale` g
  [out_dim] (starting at 1). DINO freezes it during the first epoch with an
  optimizer mask on that path.

  Args:
    in_dim: input dimension, or None to read it at `init`.
    out_dim: K, number of output logits (65536 in DINO).
    hidden_dim: hidden width of the MLP.
    bottleneck_dim: dimension before the last layer.
    num_layers: linear layers of the MLP (>= 1).
    norm_last_layer: fix g = 1 (no `scale` parameter), DINO's default.
    dtype, param_dtype: computation and parameter dtypes.

  Returns:
    A `Model` [B, in_dim] -> [B, out_dim], with empty `model_state`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import dino_head
    >>> head = dino_head(8, 32, hidden_dim=16, bottleneck_dim=4)
    >>> params, state = head.init(jax.random.key(0), jnp.ones((2, 8)))
    >>> print(params["last_layer"]["kernel"].shape, state)
    (4, 32) {}
  """
  return _head("dino_head", in_dim, lambda d, rngs: DINOHead(
      d, out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
      num_layers=num_layers, norm_last_layer=norm_last_layer, dtype=dtype,
      param_dtype=param_dtype, rngs=rngs))


def prototypes(in_dim: Optional[int], num_prototypes: int, *,
               normalize_input: bool = True, dtype: Optional[Dtype] = None,
               param_dtype: Dtype = jnp.float32) -> Model:
  """SwAV prototypes (see `Prototypes`): scores [B, K] = normalize(z) · C.

  Args:
    in_dim: input dimension, or None to read it at `init`.
    num_prototypes: K.
    normalize_input: l2-normalise the input first (SwAV does).
    dtype, param_dtype: computation and parameter dtypes.

  Returns:
    A `Model` [B, in_dim] -> [B, K]; params `{"kernel": [in_dim, K]}`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import normalize_prototypes, prototypes
    >>> head = prototypes(4, 3)
    >>> params, state = head.init(jax.random.key(0), jnp.ones((2, 4)))
    >>> params = normalize_prototypes(params)
    >>> scores, _ = head.apply(params, state, jnp.ones((2, 4)), train=True)
    >>> print(scores.shape, bool(jnp.all(jnp.abs(scores) <= 1.0 + 1e-6)))
    (2, 3) True
  """
  return _head("prototypes", in_dim, lambda d, rngs: Prototypes(
      d, num_prototypes, normalize_input=normalize_input, dtype=dtype,
      param_dtype=param_dtype, rngs=rngs))
