"""Dissimilarity measures L(T, warped I) for (N, 1, H, W) tensors; lower is better.

Book: chapter "The registration problem" (``book/02_problem.ipynb``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def mae(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, the paper's data term."""
    return (warped - fixed).abs().mean()


def mse(warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return (warped - fixed).pow(2).mean()


def lncc(warped: torch.Tensor, fixed: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Negative local normalised cross-correlation over ``window`` x ``window`` boxes (returns 1 - mean NCC^2).

    Images (N, C, H, W); outside the image the boxes see zeros. The five local means (of both images, their
    squares and their product) come from one grouped, separable box filter: a 1 x w then a w x 1 mean.
    """
    stack = torch.cat((warped, fixed, warped * warped, fixed * fixed, warped * fixed), dim=1)
    groups, half = stack.shape[1], window // 2
    row = torch.full((groups, 1, 1, window), 1.0 / window, device=warped.device, dtype=warped.dtype)
    means = F.conv2d(F.conv2d(stack, row, padding=(0, half), groups=groups), row.transpose(2, 3),
                     padding=(half, 0), groups=groups)
    mu_w, mu_f, mean_ww, mean_ff, mean_wf = means.chunk(5, dim=1)
    var_w = mean_ww - mu_w**2
    var_f = mean_ff - mu_f**2
    cov = mean_wf - mu_w * mu_f
    ncc2 = cov**2 / (var_w.clamp_min(0) * var_f.clamp_min(0) + eps)
    return 1.0 - ncc2.mean()


def jacobian_determinant_tensor(u: torch.Tensor) -> torch.Tensor:
    """det J of phi(x) = x + u(x) for a pixel displacement (N, 2, H, W), by central differences: (N, H, W).

    The differentiable twin of :func:`dipreg.metrics.jacobian_determinant` (same finite differences).
    """
    d0r, d0c = torch.gradient(u[:, 0], dim=(1, 2))
    d1r, d1c = torch.gradient(u[:, 1], dim=(1, 2))
    return (1 + d0r) * (1 + d1c) - d0c * d1r


def field_penalty(u: torch.Tensor, fold_weight: float = 0.0, volume_weight: float = 0.0, *, margin: float = 0.1,
                  floor: float = 0.05) -> torch.Tensor:
    """The explicit terms on a pixel displacement u (N, 2, H, W), with det J computed once (dimensionless):
    ``fold_weight`` x mean of ``relu(margin - det J)`` plus ``volume_weight`` x the variance over the pixels of
    log det J (det J floored at ``floor`` inside the logarithm), each averaged over the batch.

    The fold barrier is zero unless a pixel compresses below ``margin`` or folds (det J <= 0): not a smoothness
    prior, it acts only where the deformation is about to stop being invertible. The log det J variance is zero
    for any affine map (constant det J), so it leaves a global change of size to an affine stage; it is the square
    of the SD of log det J that book chapter "Evaluating a registration" reports as the roughness of a field, and
    chapter "Registration with a deep image prior" ("A volume regulariser") adds it to the default.
    """
    if not (fold_weight or volume_weight):
        return u.new_zeros(())  # no term asked for: no det J to compute
    det = jacobian_determinant_tensor(u)
    total = det.new_zeros(())
    if fold_weight:
        total = total + fold_weight * torch.relu(margin - det).mean()
    if volume_weight:
        logj = torch.log(torch.clamp(det, min=floor))
        total = total + volume_weight * logj.flatten(1).var(dim=1).mean()
    return total


def fold_penalty(u: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Mean of ``relu(margin - det J)``: the fold barrier of :func:`field_penalty` alone."""
    return field_penalty(u, fold_weight=1.0, margin=margin)


def log_jacobian_variance(u: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """Variance over the pixels of log det J, averaged over the batch: the volume term of :func:`field_penalty`
    alone."""
    return field_penalty(u, volume_weight=1.0, floor=floor)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mae": mae, "mse": mse, "lncc": lncc}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Look up a loss by name: ``"mae"``, ``"mse"`` or ``"lncc"``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, got {name!r}") from None
