"""Step-to-step state of SSL methods as NamedTuples with pure init/update.

    from ssljax import state
    target = state.ema.update(target, online, momentum)
    q = state.queue.push(q, keys)
    codes = state.sinkhorn(scores)
    clusters = state.kmeans(x, k, iterations=20, key=key, seeding="random")

`KMEANS_SEEDINGS` lists `kmeans`'s initialisations ("k-means++", "random").
"""

from ssljax.state import center, ema, queue
from ssljax.state._kmeans import SEEDINGS as KMEANS_SEEDINGS
from ssljax.state._kmeans import KMeansState, kmeans
from ssljax.state._sinkhorn import sinkhorn
