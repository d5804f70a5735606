"""NNCLR: nearest neighbours from a support set as positives.

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My
Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
ICCV 2021. There is no official code; solo-learn's and lightly's
implementations are the references.

Backbone, a 3-layer projector (output z, ending in BatchNorm) and a 2-layer
predictor (output p) see two "byol" views. The support set Q is a queue of
past normalised projections of the first view; NN(z) = argmax_{q∈Q}
cos(z, q) replaces z as the anchor (eq. 2), and the loss is symmetrised and
averaged:

    ctr(z, p') = mean_i −log exp(NN(z_i)·p'_i / T) / Σ_k exp(NN(z_i)·p'_k / T)
    loss = ½ ctr(z1, p2) + ½ ctr(z2, p1),

then the normalised z1 of the batch are enqueued. No gradient flows through
the neighbour lookup. Defaults follow the paper (T = 0.1, |Q| = 98304,
projector 2048 → 256, predictor 4096); the CIFAR configs use solo-learn's
recipe (T = 0.2, |Q| = 65536). The support set starts as random unit
vectors, as in solo-learn. Each view goes through the network in its own
call, so BatchNorm statistics are per view (`view_batchnorm="per_view"`),
as solo-learn's per-crop forward. Differences from solo-learn: see
docs/fidelity.md#nnclr.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.nnclr(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                        proj_dim=8, pred_hidden_dim=16, queue_size=32)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> _, out = method.loss(params, model_state, method_state,
  ...                      {"image": images}, jax.random.key(1), 0)
  >>> _, state = method.post_update(params, method_state, out.update, 0)
  >>> print(int(state.queue.ptr), state.queue.buffer.shape)
  4 (32, 8)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax

from ssljax import _common, losses, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method
from ssljax.state import queue as queue_lib


class NNCLRState(NamedTuple):
  """NNCLR's state: the support set, a queue of normalised projections."""
  queue: queue_lib.QueueState


def objective(projection: jax.Array, prediction: jax.Array,
              support: jax.Array, *, temperature: float) -> jax.Array:
  """½ ctr(z1, p2) + ½ ctr(z2, p1) of [2, B, D] projections z and
  predictions p against the [M, D] support set (`losses.nnclr`).

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[1.0, 0.0], [0.0, 1.0]]] * 2)
    >>> print(round(float(objective(z, z, z[0], temperature=1.0)), 4))
    0.3133
  """
  return 0.5 * _shared.swapped_pairs_sum(
      lambda z, p: losses.nnclr(z, p, support, temperature=temperature),
      projection, prediction)


def nnclr(*, backbone: str | models.Model = "resnet50",
          backbone_kwargs: Mapping | None = None,
          augment: Mapping = _shared.augment_config("byol"),
          dtype: str = "float32", proj_hidden_dim: int = 2048,
          proj_dim: int = 256, pred_hidden_dim: int = 4096,
          temperature: float = 0.1, queue_size: int = 98304,
          view_batchnorm: str = "per_view") -> Method:
  """NNCLR (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the 3-layer projector.
    pred_hidden_dim: the 2-layer predictor's hidden width.
    temperature: T.
    queue_size: |Q|, rows of the support set.
    view_batchnorm: "per_view" (solo-learn's per-crop forward) or "joint".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "nnclr"
  _siamese.check_counts(fn, proj_hidden_dim=proj_hidden_dim,
                        proj_dim=proj_dim, pred_hidden_dim=pred_hidden_dim,
                        queue_size=queue_size)
  _common.check_positive(temperature, "temperature", fn)
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = _shared.with_projector(
      setup, proj_hidden_dim, proj_dim, num_layers=3, last_bn=True,
      predictor=models.predictor(None, pred_hidden_dim, proj_dim,
                                 **setup.kw))

  def init(rng, batch):
    model_rng, queue_rng = jax.random.split(rng)
    params, model_state = _shared.initialize(setup, model, model_rng, batch)
    params = _siamese.torch_heads(params, jax.random.fold_in(model_rng, 1))
    return params, model_state, NNCLRState(
        queue_lib.init(queue_size, proj_dim, key=queue_rng))

  def loss(params, model_state, method_state, batch, rng, step):
    del step  # No schedule.
    run = _shared.online(setup, model, params, model_state, batch, rng,
                         joint=joint)
    z = run.outputs["projection"]
    value = objective(z, run.outputs["prediction"],
                      method_state.queue.buffer, temperature=temperature)
    # The update: the rows to enqueue, the first view's normalised z.
    return value, _shared.step_output(run, update=_common.l2_normalize(z[0]))

  def post_update(params, method_state, update, step):
    del step  # No schedule.
    return params, NNCLRState(queue_lib.push(method_state.queue, update))

  return Method(name=fn, init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup), crops=setup.views.specs)
