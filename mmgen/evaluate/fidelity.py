"""Fidelity metrics between synthetic records and the real test split.

All of them compare two samples; none trains on the real data. Sample sizes
are capped (``max_samples``, a uniform subsample with a public seed) so that
time and memory stay bounded, and the sizes used are reported because every
one of these estimators depends on them.

* **Fréchet distance in EfficientNet-Lite0 features** (``"FD-EfficientNetLite0"``):
  with ``μ_r, Σ_r`` and ``μ_s, Σ_s`` the mean and covariance of the embeddings
  of real and synthetic records (Heusel et al. 2017, eq. 6),

      FD = ‖μ_r − μ_s‖² + tr(Σ_r + Σ_s − 2 (Σ_r Σ_s)^{1/2}).

  The embedding is the globally pooled 1,280-d output of the ImageNet
  EfficientNet-Lite0 of :mod:`mmgen.features.perceptual` (before its
  normalisation), on records rescaled to [−1, 1], grey repeated to 3 channels,
  resized to 64×64. It is *not* FID (Inception-v3 at 299×299): numbers are
  comparable only with each other, at the same sample sizes.
* **Precision, recall, density, coverage** (Naeem et al., "Reliable Fidelity and
  Diversity Metrics for Generative Models", ICML 2020, eqs. 1–4 and Sec. 3), in
  the same embedding. With real embeddings ``X_i`` (N), synthetic ``Y_j`` (M),
  ``B(X_i, r_i)`` the ball around ``X_i`` whose radius ``r_i`` is the distance to
  its k-th nearest real neighbour:

      precision = 1/M Σ_j 1[∃i: Y_j ∈ B(X_i, r_i)]
      recall    = 1/N Σ_i 1[∃j: X_i ∈ B(Y_j, s_j)]     (s_j: k-NN radius among synthetic)
      density   = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_i)]
      coverage  = 1/N Σ_i 1[∃j: Y_j ∈ B(X_i, r_i)]

* **Kernel MMD²** with the Gaussian kernel ``k(a, b) = exp(−‖a − b‖² / (2σ²))``
  on flattened records, the unbiased estimator (Gretton et al., JMLR 2012, eq. 3):

      MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j),

  computed in blocks of ``chunk`` rows (memory O(chunk · n)). It can be
  slightly negative when the two distributions agree. The default bandwidth σ
  is the median pairwise distance of the *real* reference subsample, so one
  test set gives one σ for every synthetic set compared against it.
* **Sinkhorn divergence** (Feydy et al., AISTATS 2019) with geomloss's
  ``SamplesLoss("sinkhorn", p=2, blur=blur)`` on flattened records rescaled to
  [0, 1]: ``S_ε(α, β) = OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β)`` with cost
  ``½‖x − y‖²``; it is ≥ 0 and 0 for identical samples. Default
  ``blur = 0.05·√D`` (D values per record), a public rule.
"""

from __future__ import annotations

import math
import numpy as np
import torch

from ..errors import DataError, MMGenError
from ..features import create

__all__ = [
    "FD_NAME",
    "PRDC_NAME",
    "subsample",
    "efficientnet_lite0_embedding",
    "frechet_distance",
    "prdc",
    "mmd2_unbiased",
    "median_bandwidth",
    "sinkhorn_divergence",
]

FD_NAME = "FD-EfficientNetLite0"
PRDC_NAME = "PRDC-EfficientNetLite0"


def subsample(x: torch.Tensor, n: int | None, seed: int = 0) -> torch.Tensor:
    """At most ``n`` rows of ``x``, drawn uniformly without replacement with a public seed (all if ``n`` is None)."""
    if n is None or len(x) <= n:
        return x
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx.sort().values]


def _flat(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() < 2 or len(x) < 2:
        raise DataError(f"{what} must hold at least two records of shape (N, ...). Got {tuple(x.shape)}.")
    x = x.reshape(len(x), -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise DataError(f"{what} holds NaN or inf values.")
    return x


# -- the embedding ------------------------------------------------------------------------------------------
def efficientnet_lite0_embedding(
    x: torch.Tensor, *, low: float = 0.0, high: float = 1.0, image_size: int = 64, batch_size: int = 256
) -> torch.Tensor:
    """Pooled ImageNet EfficientNet-Lite0 features (before normalisation) of images.

    Reuses the network loading and preprocessing of the ``perceptual`` feature map
    (:mod:`mmgen.features.perceptual`: local weights mapped into timm's
    ``efficientnet_lite0``, eval mode, inputs rescaled to [−1, 1], grey repeated
    to 3 channels, bilinear resize to ``image_size``).

    Args:
        x ((N, 1 or 3, H, W) Tensor): images in the domain ``[low, high]``.
        low, high: the domain bounds.
        image_size: network input size.
        batch_size: records per forward pass (memory only).

    Returns:
        (N, 1280) float32 Tensor.

    Raises:
        DataError: if ``x`` is not a batch of 1- or 3-channel images.
        MMGenError: if the weights are not installed.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"The EfficientNet-Lite0 embedding needs images (N, 1 or 3, H, W). Got {tuple(x.shape)}.")
    fmap = create("perceptual", input_shape=tuple(x.shape[1:]), bounds=(low, high), image_size=image_size, layers=("head",))
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].float().clamp(low, high)
            out.append(fmap.backbone_.embed(fmap.preprocess(xb)))
    return torch.cat(out)


# -- Fréchet distance ---------------------------------------------------------------------------------------
def frechet_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings.

    Args:
        feat_a ((N, F) Tensor), feat_b ((M, F) Tensor): embeddings, N, M ≥ 2.

    Returns:
        ``‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` (≥ 0 up to round-off).

    Example:
        >>> import torch
        >>> a = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
        >>> round(frechet_distance(a, a), 6)
        0.0
        >>> round(frechet_distance(a, a + 1.0), 3)
        4.0
    """
    a, b = _flat(feat_a, "feat_a"), _flat(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"Embeddings differ in width: {a.shape[1]} and {b.shape[1]}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b  # centred, (N, F) and (M, F): Σ_a = caᵀca/(N−1), Σ_b = cbᵀcb/(M−1)
    scale = math.sqrt((len(a) - 1) * (len(b) - 1))
    # tr (Σ_a Σ_b)^{1/2} = Σ_i sqrt(λ_i) over the eigenvalues of a symmetric PSD matrix of the smallest size
    # that has the same nonzero eigenvalues as Σ_a Σ_b (exact, no matrix square root):
    if min(len(a), len(b)) < a.shape[1]:
        k = ca @ cb.T / scale  # (N, F) @ (F, M)
        sym = k @ k.T if len(a) <= len(b) else k.T @ k  # (min(N, M),)²: K Kᵀ or Kᵀ K
    else:
        jitter = 1e-10 * torch.eye(a.shape[1], dtype=a.dtype)
        r = torch.linalg.cholesky(ca.T @ ca / (len(a) - 1) + jitter)  # Σ_a = R Rᵀ, (F, F)
        sym = r.T @ (cb.T @ cb / (len(b) - 1)) @ r  # Rᵀ Σ_b R
    tr_sqrt = float(torch.linalg.eigvalsh(sym).clamp(min=0).sqrt().sum())
    tr_a = float((ca * ca).sum()) / (len(a) - 1)
    tr_b = float((cb * cb).sum()) / (len(b) - 1)
    fd = float(((mu_a - mu_b) ** 2).sum()) + tr_a + tr_b - 2.0 * tr_sqrt
    return max(fd, 0.0)


# -- precision / recall / density / coverage ----------------------------------------------------------------
def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of every row of ``x`` to its k-th nearest *other* row ((N,))."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (chunk, N)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself at distance 0
    return torch.cat(out)


def prdc(real: torch.Tensor, fake: torch.Tensor, *, k: int = 5, chunk: int = 1024) -> dict:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (Naeem et al. 2020).

    Args:
        real ((N, F) Tensor), fake ((M, F) Tensor): embeddings; N, M > k.
        k: the k of the k-NN balls (the paper recommends 5).
        chunk: rows per distance block (memory O(chunk · max(N, M))).

    Returns:
        ``{"precision", "recall", "density", "coverage", "k"}``; precision, recall and
        coverage lie in [0, 1]; density can exceed 1.

    Example:
        >>> import torch
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
        >>> prdc(x, x)["precision"], prdc(x, x + 100.0)["coverage"]
        (1.0, 0.0)
    """
    x, y = _flat(real, "real"), _flat(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"Embeddings differ in width: {x.shape[1]} and {y.shape[1]}.")
    if not isinstance(k, int) or k < 1 or k >= min(len(x), len(y)):
        raise MMGenError(f"`k` must be an integer in [1, {min(len(x), len(y)) - 1}]. Got {k!r}.")
    r_real = _kth_nn_radius(x, k, chunk)  # (N,)
    r_fake = _kth_nn_radius(y, k, chunk)  # (M,)
    in_real_balls = torch.zeros(len(y), dtype=torch.float64)  # per fake: how many real balls contain it
    covered = torch.zeros(len(x), dtype=torch.bool)  # per real: is a fake inside its ball
    recalled = torch.zeros(len(x), dtype=torch.bool)  # per real: inside some fake ball
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], y)  # (chunk, M)
        inside = d <= r_real[i : i + chunk, None]  # fake j in ball of real i
        in_real_balls += inside.sum(0)
        covered[i : i + chunk] = inside.any(1)
        recalled[i : i + chunk] = (d <= r_fake[None, :]).any(1)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.sum() / (k * len(y))),
        "coverage": float(covered.double().mean()),
        "k": k,
    }


# -- kernel MMD ---------------------------------------------------------------------------------------------
def median_bandwidth(x: torch.Tensor, max_samples: int = 1000, seed: int = 0) -> float:
    """The median pairwise Euclidean distance of (a subsample of) ``x`` (flattened)."""
    xs = _flat(subsample(x, max_samples, seed), "x")
    d = torch.cdist(xs, xs)  # (n, n)
    iu = torch.triu_indices(len(xs), len(xs), offset=1)
    return float(d[iu[0], iu[1]].median())


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, chunk: int, exclude_diagonal: bool) -> float:
    """Σ_{i,j} exp(−γ‖a_i − b_j‖²) in blocks of ``chunk`` rows (without i = j when a is b)."""
    total = 0.0
    for i in range(0, len(a), chunk):
        d2 = torch.cdist(a[i : i + chunk], b).pow_(2)  # (chunk, len(b))
        total += float(torch.exp(-gamma * d2).sum())
    if exclude_diagonal:
        total -= len(a)  # k(x, x) = 1
    return total


def mmd2_unbiased(
    x: torch.Tensor, y: torch.Tensor, *, bandwidth: float, chunk: int = 1024
) -> float:
    """Unbiased estimate of MMD² between the samples ``x`` and ``y`` with a Gaussian kernel.

    Args:
        x ((M, ...) Tensor), y ((N, ...) Tensor): samples, flattened to vectors; M, N ≥ 2.
        bandwidth: σ of ``exp(−‖a − b‖² / (2σ²))`` (> 0).
        chunk: rows per kernel block.

    Returns:
        MMD²_u (may be slightly negative when the distributions agree).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
        >>> abs(mmd2_unbiased(a, b, bandwidth=1.0)) < 0.01, mmd2_unbiased(a, b + 2, bandwidth=1.0) > 0.3
        (True, True)
    """
    a, b = _flat(x, "x"), _flat(y, "y")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"Samples differ in width: {a.shape[1]} and {b.shape[1]}.")
    if not bandwidth > 0:
        raise MMGenError(f"`bandwidth` must be > 0. Got {bandwidth!r}.")
    gamma = 1.0 / (2.0 * bandwidth**2)
    m, n = len(a), len(b)
    kxx = _kernel_sum(a, a, gamma, chunk, True) / (m * (m - 1))
    kyy = _kernel_sum(b, b, gamma, chunk, True) / (n * (n - 1))
    kxy = _kernel_sum(a, b, gamma, chunk, False) / (m * n)
    return kxx + kyy - 2.0 * kxy


# -- Sinkhorn divergence ------------------------------------------------------------------------------------
def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, *, blur: float | None = None, scaling: float = 0.8) -> dict:
    """Debiased Sinkhorn divergence between two samples (geomloss, p = 2).

    Args:
        x ((M, ...) Tensor), y ((N, ...) Tensor): samples with values already in [0, 1]
            (rescale by the domain first), flattened to D values.
        blur: geomloss's ``blur`` (entropic length scale); default ``0.05·√D``.
        scaling: geomloss's ε-scaling factor (accuracy vs speed).

    Returns:
        ``{"value": S, "blur": blur}``; memory is O(M·N) (geomloss's tensorized backend):
        cap M and N with :func:`subsample`.

    Example:
        >>> import torch
        >>> a = torch.rand(100, 4, generator=torch.Generator().manual_seed(0))
        >>> sinkhorn_divergence(a, a)["value"] < 1e-6
        True
    """
    from geomloss import SamplesLoss

    a, b = _flat(x, "x").float(), _flat(y, "y").float()
    if a.shape[1] != b.shape[1]:
        raise DataError(f"Samples differ in width: {a.shape[1]} and {b.shape[1]}.")
    blur = float(blur) if blur is not None else 0.05 * math.sqrt(a.shape[1])
    if not blur > 0:
        raise MMGenError(f"`blur` must be > 0. Got {blur!r}.")
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized")
    with torch.no_grad():
        value = float(loss(a, b))
    return {"value": value, "blur": blur}
