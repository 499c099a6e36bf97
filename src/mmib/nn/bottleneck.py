"""The variational information bottleneck (VIB) shared by MIB, OMIB and MCER.

``x -> hidden (ReLU) -> (mu, std)``, ``std = softplus(W_std h - 5)`` so the
bottleneck starts nearly deterministic (as the MIB reference does),
``z = mu + std * eps`` while training and ``z = mu`` at evaluation, and the KL
divergence to N(0, I) in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


#: How a KL summed over z's dimensions enters a loss: ``sum`` as it is, ``mean`` divided by the width.
KL_REDUCTIONS = ("sum", "mean")


def kl_weight(reduction: str, z_dim: int) -> float:
    """Factor that turns a KL summed over ``z_dim`` dimensions into the ``reduction`` the loss uses."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl reduction {reduction!r} is not one of {', '.join(KL_REDUCTIONS)}")
    return 1.0 if reduction == "sum" else 1.0 / z_dim


def gaussian_kl_standard(mu: Tensor, std: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-sample ``KL(N(mu, diag std^2) || N(0, I))`` summed over dimensions: ``(B,)``."""
    var = std.pow(2)
    return 0.5 * (var + mu.pow(2) - 1.0 - torch.log(var + eps)).sum(-1)


def gaussian_kl(mu_q: Tensor, std_q: Tensor, mu_p: Tensor, std_p: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-sample ``KL(N(mu_q, std_q^2) || N(mu_p, std_p^2))`` for diagonal Gaussians: ``(B,)``."""
    var_q, var_p = std_q.pow(2) + eps, std_p.pow(2) + eps
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p).pow(2)) / var_p - 1.0).sum(-1)


@dataclass
class BottleneckOutput:
    """Sample ``z``, the posterior's ``mu`` and ``std``, and the batch-mean ``kl`` to N(0, I)."""

    z: Tensor
    mu: Tensor
    std: Tensor
    kl: Tensor


class VariationalBottleneck(nn.Module):
    """Stochastic encoder ``p(z|x) = N(mu(x), diag std(x)^2)`` with a closed-form KL to N(0, I).

    Args:
        in_dim: input width.
        z_dim: bottleneck width (the MIB reference uses 50).
        hidden: width of the ReLU layer before the mean and std heads (1024 in
            the reference); 0 or None maps the input directly.
        std_offset: subtracted before the softplus (5 in the reference).
        sample_in_eval: sample at evaluation too (off: evaluation uses ``mu``, so it
            is deterministic).
    """

    def __init__(
        self, in_dim: int, z_dim: int = 50, hidden: int | None = 1024, std_offset: float = 5.0,
        dropout: float = 0.0, sample_in_eval: bool = False,
    ) -> None:
        super().__init__()
        if hidden:
            self.body: nn.Module = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
            width = hidden
        else:
            self.body = nn.Identity()
            width = in_dim
        self.mu = nn.Linear(width, z_dim)
        self.std = nn.Linear(width, z_dim)
        self.std_offset = std_offset
        self.sample_in_eval = sample_in_eval
        self.z_dim = z_dim

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, std)`` of p(z|x)."""
        h = self.body(x)
        return self.mu(h), F.softplus(self.std(h) - self.std_offset)

    def forward(self, x: Tensor) -> BottleneckOutput:
        mu, std = self.posterior(x)
        if self.training or self.sample_in_eval:
            z = mu + std * torch.randn_like(std)
        else:
            z = mu
        return BottleneckOutput(z, mu, std, gaussian_kl_standard(mu, std).mean())
