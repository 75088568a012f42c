"""Measurement instruments (docs/method.md sections 3, 6, 7): transport costs with exact OT, the CT/CD gap and
its limit, the gap proxy R~_t, exact and sliced W2, and FID. Depends only on gclib's core modules."""
from .digits import digits_features, fd_digits, kid_digits
from .fid import (FeatureStats, fid_from_samples, frechet_distance, inception_extractor, inception_weights_path,
                  load_stats, reference_stats, save_stats, stats_from_samples, to_uint8)
from .gap import DEFAULT_NS, GapResult, ct_cd_gap
from .proxy import Denoiser, coupling_pairs_fn, proxy_exact_ic, proxy_fitted
from .transport import OTCost, coupling_cost, exact_ot_cost, minibatch_ot_cost, transport_cost_curve
from .inception import (fid_inception, inception_features, inception_metrics, isc_inception, kid_inception,
                        reference_features)
from .kid import kid, mmd2_unbiased
from .wasserstein import sliced_wasserstein, w2_exact

__all__ = ["fid_inception", "inception_features", "inception_metrics", "isc_inception", "kid_inception",
           "reference_features", "digits_features", "fd_digits", "kid_digits", "kid", "mmd2_unbiased", "FeatureStats", "fid_from_samples", "frechet_distance", "inception_extractor", "inception_weights_path",
           "load_stats", "reference_stats", "save_stats", "stats_from_samples", "to_uint8", "DEFAULT_NS", "GapResult",
           "ct_cd_gap", "Denoiser", "coupling_pairs_fn", "proxy_exact_ic", "proxy_fitted", "OTCost", "coupling_cost",
           "exact_ot_cost", "minibatch_ot_cost", "transport_cost_curve", "sliced_wasserstein", "w2_exact"]
