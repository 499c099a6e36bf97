"""MINE: the mutual information neural estimator (Belghazi et al., 2018).

A statistics network ``T(x, y)`` is trained to maximise the Donsker-Varadhan
(DV) lower bound

    I(X; Y) >= E_{p(x,y)}[T(x, y)] - log E_{p(x)p(y)}[exp T(x, y)].

The gradient of the log term estimated on a mini-batch is biased; MINE
corrects it by dividing the gradient of ``E[exp T]`` by an exponential moving
average of ``E[exp T]`` instead of the batch value (section 3.2 of the MINE
paper). :meth:`MINE.surrogate_loss` implements exactly that.

Samples of the product of marginals. Within a batch of ``B`` pairs we score
every combination ``(x_i, y_j)`` (a ``B x B`` matrix; the critic's first layer
is split so this costs little more than ``B`` evaluations) and average
``exp T`` over all of them. Compared with one random shuffle this has far lower
variance, and it keeps the estimate finite where the true value is not: the
diagonal ``i = j`` is included, so by Jensen's inequality the DV value can
never exceed ``log B``. That matters for the OMIB paper's use, ``H(v) = I(v; v)``
for continuous ``v``, which is infinite in theory: MINE then returns a
capacity-limited number close to ``log B``, comparable only at equal batch
size. Reported values are in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmib.errors import ConfigError, DataError


class ConcatCritic(nn.Module):
    """``T(x, y) = MLP([x; y])`` as in the MINE paper (ELU hidden layers, scalar output).

    :meth:`pairwise` scores all ``B x B`` pairs by splitting the first linear
    layer: ``W [x; y] = W_x x + W_y y``.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        if min(x_dim, y_dim, hidden, layers) < 1:
            raise ConfigError("ConcatCritic needs positive x_dim, y_dim, hidden and layers")
        self.wx = nn.Linear(x_dim, hidden)
        self.wy = nn.Linear(y_dim, hidden, bias=False)
        rest: list[nn.Module] = [nn.ELU()]
        for _ in range(layers - 1):
            rest += [nn.Linear(hidden, hidden), nn.ELU()]
        rest.append(nn.Linear(hidden, 1))
        self.rest = nn.Sequential(*rest)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores of the pairs ``(x_i, y_i)``: ``(B,)``."""
        return self.rest(self.wx(x) + self.wy(y)).squeeze(-1)

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores ``T(x_i, y_j)`` of all pairs: ``(B, B)``."""
        h = self.wx(x).unsqueeze(1) + self.wy(y).unsqueeze(0)
        return self.rest(h).squeeze(-1)


class SeparableCritic(nn.Module):
    """``T(x, y) = <f(x), g(y)> / sqrt(width)`` with MLPs ``f`` and ``g`` (cheaper pairwise scores)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        if min(x_dim, y_dim, hidden, layers) < 1:
            raise ConfigError("SeparableCritic needs positive x_dim, y_dim, hidden and layers")
        self.f = _mlp(x_dim, hidden, layers)
        self.g = _mlp(y_dim, hidden, layers)
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return (self.f(x) * self.g(y)).sum(-1) * self.scale

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        return self.f(x) @ self.g(y).T * self.scale


def _mlp(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.ELU()]
        width = hidden
    mods.append(nn.Linear(width, hidden))
    return nn.Sequential(*mods)


CRITICS: dict[str, type[nn.Module]] = {"concat": ConcatCritic, "separable": SeparableCritic}


def dv_bound(scores: Tensor) -> Tensor:
    """DV bound from a ``(B, B)`` score matrix: mean of the diagonal (joint) minus the log
    of the mean of ``exp`` over all entries (product of marginals)."""
    n = scores.numel()
    return scores.diagonal().mean() - (torch.logsumexp(scores.reshape(-1), dim=0) - math.log(n))


class MINE(nn.Module):
    """Mutual information estimator with the moving-average gradient-bias correction.

    Args:
        x_dim, y_dim: widths of the two variables.
        hidden, layers: size of the statistics network.
        ema_rate: weight of the newest batch in the moving average of ``E[exp T]``
            (the MINE paper uses 0.01).
        critic: ``"concat"`` (an MLP on ``[x; y]``, as in the MINE paper) or
            ``"separable"`` (``<f(x), g(y)>``).
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int = 128, layers: int = 2, ema_rate: float = 0.01,
        critic: str = "concat",
    ) -> None:
        super().__init__()
        if not 0.0 < ema_rate <= 1.0:
            raise ConfigError(f"ema_rate must lie in (0, 1], got {ema_rate}")
        if critic not in CRITICS:
            raise ConfigError(f"unknown MINE critic {critic!r}; choose one of {', '.join(CRITICS)}")
        self.T = CRITICS[critic](x_dim, y_dim, hidden, layers)
        self.ema_rate = float(ema_rate)
        # log of the moving average of E_marginal[exp T]; NaN until the first batch.
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def surrogate_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Loss whose gradient is MINE's bias-corrected gradient of ``-DV``, and the batch DV value.

        The marginal term's gradient is ``E[grad T exp T] / EMA[exp T]`` instead of
        ``E[grad T exp T] / E_batch[exp T]``; shifting by the batch max keeps
        ``exp`` finite (the shift cancels in the ratio). The moving average is kept
        in log space.
        """
        scores = self.T.pairwise(x, y)
        t_joint = scores.diagonal().mean()
        flat = scores.reshape(-1)
        shift = flat.detach().max()
        mean_exp = torch.exp(flat - shift).mean()  # E[exp T] * exp(-shift)
        batch_log = (torch.log(mean_exp.detach()) + shift).detach()
        with torch.no_grad():
            if torch.isnan(self.log_ema):
                self.log_ema.copy_(batch_log)
            else:
                a = self.ema_rate
                old = self.log_ema + math.log1p(-a) if a < 1.0 else torch.full_like(self.log_ema, -math.inf)
                self.log_ema.copy_(torch.logaddexp(old, batch_log + math.log(a)))
        marginal_term = mean_exp / torch.exp(self.log_ema - shift)
        loss = -(t_joint - marginal_term)
        return loss, (t_joint - batch_log).detach()

    @torch.no_grad()
    def bound(self, x: Tensor, y: Tensor) -> Tensor:
        """The DV lower bound on ``I(X; Y)`` for one batch (no gradient)."""
        return dv_bound(self.T.pairwise(x, y))


@dataclass
class MIEstimate:
    """A MINE estimate in nats, with the spread over evaluation batches."""

    value: float
    std: float
    steps: int
    samples: int
    batch_size: int


def _as_2d(t: Tensor | object, name: str) -> Tensor:
    x = torch.as_tensor(t, dtype=torch.float32)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() != 2:
        raise DataError(f"{name} must be a (N, D) array, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{name} has NaN or infinite values")
    return x


def estimate_mi(
    x: Tensor,
    y: Tensor,
    steps: int = 300,
    batch_size: int = 256,
    hidden: int = 128,
    layers: int = 2,
    lr: float = 3e-4,
    ema_rate: float = 0.01,
    eval_batches: int = 8,
    max_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    critic: str = "separable",
) -> MIEstimate:
    """Estimate ``I(X; Y)`` in nats with MINE from paired rows of ``x`` (N, Dx) and ``y`` (N, Dy).

    Trains a fresh statistics network for ``steps`` Adam steps on random
    mini-batches of ``batch_size`` pairs, then averages the DV bound over
    ``eval_batches`` further batches. ``max_samples`` caps the rows used (a random
    subset), which bounds the cost on large datasets; ``critic`` picks the
    statistics network (see :class:`MINE`): the default ``separable`` scores all
    ``B x B`` pairs with one matrix product, while ``concat`` evaluates its MLP on
    every pair (accurate but about 100x slower at ``B = 256``). With wide inputs
    (the SIM sets have 700-1100 features) ``lr = 1e-3`` sometimes diverged in our
    checks; ``3e-4`` was stable. Runs under its own RNG (``seed``) and
    leaves the global torch RNG state untouched.
    """
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    if steps < 1 or batch_size < 2 or eval_batches < 1:
        raise ConfigError("estimate_mi needs steps >= 1, batch_size >= 2 and eval_batches >= 1")
    n = x.shape[0]
    if n < 4:
        raise DataError(f"estimate_mi needs at least 4 samples, got {n}")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        if max_samples is not None and n > max_samples:
            keep = torch.randperm(n, generator=g)[: int(max_samples)]
            x, y = x.index_select(0, keep), y.index_select(0, keep)
            n = x.shape[0]
        bs = min(batch_size, n)
        mine = MINE(x.shape[1], y.shape[1], hidden, layers, ema_rate, critic).to(device)
        opt = torch.optim.Adam(mine.parameters(), lr=lr)
        mine.train()
        for _ in range(steps):
            idx = torch.randperm(n, generator=g)[:bs]
            loss, _ = mine.surrogate_loss(x[idx].to(device), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        mine.eval()
        values = []
        for _ in range(eval_batches):
            idx = torch.randperm(n, generator=g)[:bs]
            values.append(float(mine.bound(x[idx].to(device), y[idx].to(device))))
    t = torch.tensor(values, dtype=torch.float64)
    return MIEstimate(float(t.mean()), float(t.std()) if len(values) > 1 else 0.0, steps, n, bs)
