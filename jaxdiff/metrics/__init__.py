"""Evaluation metrics: memorization (nearest-neighbour ratio, f_mem) and sample quality (FD, KID, SW).

The Inception-v3 extractor lives in `jaxdiff.metrics.inception` and is imported only when
`feature_extractor('inception', ...)` asks for it.
"""

from jaxdiff.metrics.memorization import (f_mem_bootstrap, memorization_metrics, memorization_ratio,
                                          nearest_two, nearest_two_sharded)
from jaxdiff.metrics.quality import (feature_extractor, feature_statistics, frechet_distance,
                                     frechet_distance_from_features, kid, quality_metrics,
                                     register_feature_extractor, sliced_wasserstein)

__all__ = ['f_mem_bootstrap', 'memorization_metrics', 'memorization_ratio', 'nearest_two',
           'nearest_two_sharded', 'feature_extractor', 'feature_statistics', 'frechet_distance',
           'frechet_distance_from_features', 'kid', 'quality_metrics', 'register_feature_extractor',
           'sliced_wasserstein']
