"""Mutual-information estimators shared by the MI-based models (MMIM, MCER, ...).

Three pieces, each usable on its own:

* :class:`GaussianConditional` and :class:`BarberAgakov`: the Barber-Agakov
  lower bound ``I(X;Y) >= E[log q(y|x)] + H(Y)`` with a variational Gaussian
  predictor ``q(y|x) = N(mu(x), diag sigma^2(x))`` (Barber & Agakov 2004; the
  form MMIM eqs. 3-4 use). ``H(Y)`` is not learned: give it in closed form when
  it is known, or estimate it with :class:`GMMEntropy`.
* :class:`GMMEntropy`: the lower bound ``sum_c w_c h_c`` on the entropy of a
  Gaussian mixture whose components are labelled groups of samples (MMIM eqs.
  5-8: the polarity classes of a sentiment label), each component's mean and
  full covariance estimated on the current batch plus a FIFO memory of the last
  K batches (MMIM Appendix A.1). The memory lives in registered buffers, so
  checkpoints and ``--resume`` restore it. Covariances are regularised
  (a jitter, optionally shrinkage towards a scaled identity) and their
  log-determinant comes from a Cholesky factor in float64 (:func:`stable_logdet`).
  :class:`RandomProjection` is the fixed low-dimensional ``tanh`` map MMIM's
  reference applies to the target before estimating covariances.
* :func:`info_nce` and :class:`ContrastivePredictor`: CPC / InfoNCE with
  L2-normalised prediction and target and in-batch negatives (MMIM eqs. 10-11;
  Oord et al. 2018). ``log(N) - loss`` is the InfoNCE lower bound on MI, which
  can never exceed ``log N`` for a batch of N pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmib.errors import ConfigError

LOG_2PI_E = math.log(2.0 * math.pi * math.e)
#: Likelihood forms of :class:`GaussianConditional` (``reference``: MMIM's public code, no log-variance term).
LIKELIHOOD_FORMS = ("gaussian", "reference")


# ---------------------------------------------------------------------------
# Gaussian helpers
# ---------------------------------------------------------------------------
def gaussian_entropy(dim: int, logdet_cov: Tensor | float) -> Tensor:
    """Differential entropy of ``N(mu, Sigma)`` in ``dim`` dimensions: ``0.5 (dim log(2 pi e) + log det Sigma)``."""
    return 0.5 * (dim * LOG_2PI_E + torch.as_tensor(logdet_cov))


def stable_logdet(matrix: Tensor, jitter: float = 1e-6, max_tries: int = 6) -> Tensor:
    """``log det`` of a symmetric positive semi-definite ``(..., k, k)`` matrix, differentiably.

    Uses a Cholesky factor in float64 (``log det A = 2 sum log diag L``). When the
    factorisation fails, ``jitter * scale * I`` is added with ``jitter`` growing
    tenfold per try (``scale`` = mean diagonal, at least 1e-12), so a singular
    (e.g. rank-deficient or all-zero) matrix gives a finite value instead of
    ``-inf``/NaN. Returns the input's dtype.
    """
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"stable_logdet needs square matrices, got shape {tuple(matrix.shape)}")
    a = matrix.double()
    a = 0.5 * (a + a.transpose(-1, -2))
    k = a.shape[-1]
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    scale = a.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(1e-12).detach()
    eps = 0.0
    for attempt in range(max_tries + 1):
        shifted = a if eps == 0.0 else a + (eps * scale)[..., None, None] * eye
        chol, info = torch.linalg.cholesky_ex(shifted)
        if not bool((info > 0).any()):
            return (2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)).to(matrix.dtype)
        eps = jitter if attempt == 0 else eps * 10.0
    # Last resort (never reached for a finite PSD input with the jitter above).
    sign, logabs = torch.linalg.slogdet(a + (eps * scale)[..., None, None] * eye)
    return torch.where(sign > 0, logabs, torch.full_like(logabs, math.log(1e-12) * k)).to(matrix.dtype)


def regularized_covariance(samples: Tensor, shrinkage: float = 0.0, eps: float = 1e-4) -> Tensor:
    """Maximum-likelihood covariance of ``(n, k)`` samples (MMIM eq. 5), regularised.

    ``(1 - shrinkage) S + shrinkage (tr S / k) I + eps I``: shrinkage towards a
    scaled identity keeps it well conditioned when ``n`` is close to ``k``; the
    absolute ``eps`` keeps constant features (``S = 0``) finite.
    """
    if samples.dim() != 2 or samples.shape[0] < 1:
        raise ValueError(f"regularized_covariance needs (n >= 1, k) samples, got shape {tuple(samples.shape)}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    k = samples.shape[1]
    centred = samples - samples.mean(0, keepdim=True)
    cov = centred.T @ centred / samples.shape[0]
    eye = torch.eye(k, dtype=samples.dtype, device=samples.device)
    if shrinkage:
        cov = (1.0 - shrinkage) * cov + shrinkage * (cov.diagonal().mean()) * eye
    return cov + eps * eye


# ---------------------------------------------------------------------------
# Barber-Agakov bound with a Gaussian predictor
# ---------------------------------------------------------------------------
class GaussianConditional(nn.Module):
    """Variational predictor ``q(y|x) = N(mu(x), diag sigma^2(x))``.

    Two networks (as in Cheng et al. 2020 and the MMIM reference): one for the
    mean, one for the log-variance, each ``Linear -> ReLU -> Linear`` (or a single
    ``Linear`` when ``hidden=0``). The log-variance is bounded smoothly to
    ``[-logvar_bound, logvar_bound]`` (``b tanh(raw / b)``), which keeps the
    likelihood finite when ``y`` is (nearly) a deterministic function of ``x``.
    ``isotropic=True`` predicts one variance for all dimensions (``sigma^2(x) I``).
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int | None = None, isotropic: bool = False, logvar_bound: float = 10.0
    ) -> None:
        super().__init__()
        if x_dim < 1 or y_dim < 1:
            raise ConfigError(f"GaussianConditional needs positive widths, got x_dim={x_dim}, y_dim={y_dim}")
        hidden = y_dim if hidden is None else int(hidden)
        out_var = 1 if isotropic else y_dim
        self.mu = self._mlp(x_dim, hidden, y_dim)
        self.logvar = self._mlp(x_dim, hidden, out_var)
        self.x_dim, self.y_dim = x_dim, y_dim
        self.logvar_bound = float(logvar_bound)

    @staticmethod
    def _mlp(i: int, h: int, o: int) -> nn.Module:
        if h <= 0:
            return nn.Linear(i, o)
        return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``(B, y_dim)`` and log-variance ``(B, y_dim)`` (or ``(B, 1)`` when isotropic)."""
        b = self.logvar_bound
        return self.mu(x), b * torch.tanh(self.logvar(x) / b)

    def log_prob(self, x: Tensor, y: Tensor, noise_var: float = 0.0, form: str = "gaussian") -> Tensor:
        """Per-sample ``log q(y|x)`` summed over dimensions, with all constants: ``(B,)``.

        ``noise_var > 0`` gives the expectation of ``log q(y + n | x)`` over
        ``n ~ N(0, noise_var I)`` in closed form (adds ``noise_var`` to the squared
        residual), i.e. the likelihood of a slightly smoothed target.
        ``form="reference"`` drops the ``log sigma^2`` term and the constant, as MMIM's
        public code does: ``-sum (y - mu)^2 / (2 sigma^2)``. That is no log-density
        (maximising it drives ``sigma^2`` to its upper bound, after which it fades to 0).
        """
        if y.shape[-1] != self.y_dim:
            raise ValueError(f"y has width {y.shape[-1]}; this predictor was built for {self.y_dim}")
        if form not in LIKELIHOOD_FORMS:
            raise ValueError(f"likelihood form {form!r} is not one of {', '.join(LIKELIHOOD_FORMS)}")
        mu, logvar = self(x)
        logvar = logvar.expand_as(mu)
        sq = (y - mu).pow(2) + noise_var
        if form == "reference":
            return -0.5 * (sq * torch.exp(-logvar)).sum(-1)
        return -0.5 * (sq * torch.exp(-logvar) + logvar + math.log(2.0 * math.pi)).sum(-1)


@dataclass
class BAEstimate:
    """A Barber-Agakov estimate: ``bound = log_likelihood + entropy`` (all scalars).

    ``entropy`` is None when no entropy was given; then ``bound`` is the
    likelihood term alone (the part that depends on the predictor).
    """

    bound: Tensor
    log_likelihood: Tensor
    entropy: Tensor | None


class BarberAgakov(nn.Module):
    """Barber-Agakov lower bound ``I(X;Y) >= E_p(x,y)[log q(y|x)] + H(Y)``.

    The bound is tight when ``q(y|x) = p(y|x)``. Train the predictor by
    maximising :meth:`log_likelihood` (MMIM stage 1, eq. 4), then maximise the
    bound with respect to the representations ``x`` and ``y`` with the predictor
    held fixed (MMIM stage 2). ``H(Y)`` is supplied by the caller: the closed form
    for a known distribution, or :class:`GMMEntropy` for learned representations.

    ``noise_var`` (default 0) evaluates the likelihood of ``Y + N(0, noise_var I)``
    in closed form. Use the same value as the entropy estimator's covariance
    jitter (``GMMEntropy(eps=...)``): then both terms describe the same smoothed
    variable and a target dimension that collapses to a constant contributes 0
    to the bound. Without it, the likelihood of a constant grows without limit
    (up to the log-variance bound) while the estimated entropy stops at the
    jitter, so maximising the bound would reward collapsed representations.

    >>> ba = BarberAgakov(x_dim=8, y_dim=4)
    >>> est = ba(torch.randn(32, 8), torch.randn(32, 4), entropy=torch.tensor(5.0))
    >>> est.bound.shape
    torch.Size([])
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int | None = None, isotropic: bool = False, logvar_bound: float = 10.0,
        noise_var: float = 0.0, likelihood: str = "gaussian",
    ) -> None:
        super().__init__()
        if noise_var < 0:
            raise ConfigError(f"noise_var must be >= 0, got {noise_var}")
        if likelihood not in LIKELIHOOD_FORMS:
            raise ConfigError(f"likelihood {likelihood!r} is not one of {', '.join(LIKELIHOOD_FORMS)}")
        self.predictor = GaussianConditional(x_dim, y_dim, hidden, isotropic, logvar_bound)
        self.noise_var = float(noise_var)
        self.likelihood = likelihood

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Batch mean of ``log q(y|x)`` (a scalar); ``-`` this is MMIM's ``L_lld`` for one pair."""
        return self.predictor.log_prob(x, y, self.noise_var, self.likelihood).mean()

    def forward(self, x: Tensor, y: Tensor, entropy: Tensor | float | None = None) -> BAEstimate:
        """The bound on a batch of pairs; ``entropy`` = ``H(Y)`` in nats (or None)."""
        lld = self.log_likelihood(x, y)
        if entropy is None:
            return BAEstimate(lld, lld, None)
        h = torch.as_tensor(entropy, dtype=lld.dtype, device=lld.device)
        return BAEstimate(lld + h, lld, h)


# ---------------------------------------------------------------------------
# GMM entropy with a FIFO history memory
# ---------------------------------------------------------------------------
@dataclass
class EntropyEstimate:
    """A GMM entropy estimate: ``entropy`` (scalar, nats) and the components it used.

    ``entropy`` is None when no component had enough samples (``min_samples``).
    ``counts`` holds the number of samples per component (batch + memory).
    """

    entropy: Tensor | None
    components: list[int]
    counts: list[int]


class RandomProjection(nn.Module):
    """A fixed random map ``tanh(W y + b)`` from ``in_dim`` to ``out_dim`` (buffers, never trained).

    MMIM's reference code maps each target representation through a ``tanh``
    layer a quarter of its width before estimating covariances (that layer sits in
    the predictor's optimiser but the likelihood never uses it, so it stays at its
    random initialisation). Estimating ``H`` and ``q`` on a few projected
    dimensions keeps the full covariances well conditioned with batch-sized
    samples. ``W`` and ``b`` use PyTorch's ``nn.Linear`` initialisation.
    """

    def __init__(self, in_dim: int, out_dim: int, activation: str = "tanh") -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ConfigError(f"RandomProjection needs positive widths, got {in_dim} -> {out_dim}")
        if activation not in ("tanh", "none"):
            raise ConfigError(f"RandomProjection activation must be tanh or none, got {activation!r}")
        init = nn.Linear(in_dim, out_dim)
        self.register_buffer("weight", init.weight.detach().clone())
        self.register_buffer("bias", init.bias.detach().clone())
        self.activation = activation
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, y: Tensor) -> Tensor:
        out = F.linear(y, self.weight.to(y.dtype), self.bias.to(y.dtype))
        return torch.tanh(out) if self.activation == "tanh" else out


class GMMEntropy(nn.Module):
    """Entropy of learned representations via a Gaussian mixture over labelled groups.

    Each component ``c`` (e.g. positive vs negative sentiment, or a class) is a
    Gaussian whose mean and full covariance are estimated by maximum likelihood
    on the samples of that component in the current batch plus a FIFO memory of
    the last ``memory_batches`` batches (MMIM eq. 5, Appendix A.1). The estimate
    is Huber et al.'s lower bound ``H(Y) >= sum_c w_c h_c`` with
    ``h_c = 0.5 log det(2 pi e Sigma_c)`` and equal weights ``w_c`` over the
    components present (MMIM eqs. 7-8; eq. 8 is this with two components and the
    ``k log(2 pi e)`` constant dropped). With ``num_components=1`` it is the
    entropy of a single Gaussian (MMIM's "w/o GMM" ablation).

    Covariances are regularised as in :func:`regularized_covariance` (``eps`` is
    also the variance of the smoothing noise a matching :class:`BarberAgakov`
    should use) and their log-determinants come from :func:`stable_logdet`, so
    constant features, tiny batches and rank-deficient samples give finite values.
    A full covariance needs clearly more samples than dimensions; estimate on a
    low-dimensional map of the representation (:class:`RandomProjection`) when
    batches are small.

    Memory semantics: :meth:`estimate` uses the memory's (detached) samples plus
    the current batch (gradients flow through the current batch only); then
    :meth:`push` enqueues the current batch and drops the oldest once
    ``memory_batches`` batches are held. ``memory_batches=0`` disables the memory:
    each estimate uses the current batch alone (defined, but noisier; components
    with fewer than ``min_samples`` samples in the batch are left out).

    Samples whose label is negative belong to no component (e.g. sentiment 0).
    """

    def __init__(
        self, dim: int, num_components: int = 2, memory_batches: int = 1, shrinkage: float = 0.0,
        eps: float = 1e-4, min_samples: int = 2, include_constant: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"GMMEntropy needs dim >= 1, got {dim}")
        if num_components < 1:
            raise ConfigError(f"GMMEntropy needs num_components >= 1, got {num_components}")
        if memory_batches < 0:
            raise ConfigError(f"memory_batches must be >= 0, got {memory_batches}")
        if not 0.0 <= shrinkage <= 1.0:
            raise ConfigError(f"covariance shrinkage must lie in [0, 1], got {shrinkage}")
        if eps < 0:
            raise ConfigError(f"covariance eps must be >= 0, got {eps}")
        if min_samples < 2:
            raise ConfigError(f"min_samples must be >= 2 (a covariance needs two samples), got {min_samples}")
        self.dim = int(dim)
        self.num_components = int(num_components)
        self.memory_batches = int(memory_batches)
        self.shrinkage, self.eps = float(shrinkage), float(eps)
        self.min_samples = int(min_samples)
        self.include_constant = include_constant
        # FIFO memory: slot s holds one past batch (rows beyond its size have label -1).
        self.register_buffer("memory", torch.zeros(self.memory_batches, 0, self.dim))
        self.register_buffer("memory_labels", torch.full((self.memory_batches, 0), -1, dtype=torch.long))
        self.register_buffer("memory_next", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_count", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------ memory
    @property
    def memory_full(self) -> bool:
        """Whether the memory holds ``memory_batches`` batches (always true without a memory)."""
        return int(self.memory_count) >= self.memory_batches

    def _memory_samples(self) -> tuple[Tensor, Tensor]:
        filled = int(self.memory_count)
        if filled == 0 or self.memory.shape[1] == 0:
            return self.memory.new_zeros(0, self.dim), self.memory_labels.new_zeros(0)
        return self.memory[:filled].reshape(-1, self.dim), self.memory_labels[:filled].reshape(-1)

    @torch.no_grad()
    def push(self, y: Tensor, labels: Tensor) -> None:
        """Enqueue a batch (``(B, dim)`` and component labels ``(B,)``); drop the oldest when full."""
        if self.memory_batches == 0:
            return
        self._check(y, labels)
        z = y.detach().to(self.memory.dtype)
        labels = labels.detach().long().reshape(-1)
        b = z.shape[0]
        if self.memory.shape[1] < b:  # grow the slots (first batch, or a larger batch size)
            grown = self.memory.new_zeros(self.memory_batches, b, self.dim)
            grown_labels = self.memory_labels.new_full((self.memory_batches, b), -1)
            grown[:, : self.memory.shape[1]] = self.memory
            grown_labels[:, : self.memory.shape[1]] = self.memory_labels
            self.memory, self.memory_labels = grown, grown_labels
        slot = int(self.memory_next)
        self.memory[slot].zero_()
        self.memory_labels[slot].fill_(-1)
        self.memory[slot, :b] = z
        self.memory_labels[slot, :b] = labels.to(self.memory_labels.device)
        self.memory_next.fill_((slot + 1) % self.memory_batches)
        self.memory_count.fill_(min(int(self.memory_count) + 1, self.memory_batches))

    @torch.no_grad()
    def reset_memory(self) -> None:
        """Empty the memory."""
        self.memory_labels.fill_(-1)
        self.memory.zero_()
        self.memory_next.zero_()
        self.memory_count.zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[no-untyped-def]
        # The memory's slot size follows the batch size seen in training: resize before loading.
        for name in ("memory", "memory_labels"):
            saved = state_dict.get(prefix + name)
            current = getattr(self, name)
            if (
                isinstance(saved, Tensor) and saved.dim() == current.dim() and saved.shape != current.shape
                and saved.shape[0] == current.shape[0] and saved.shape[2:] == current.shape[2:]
            ):
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------ estimate
    def _check(self, y: Tensor, labels: Tensor) -> None:
        if y.dim() != 2 or y.shape[1] != self.dim:
            raise ValueError(f"y has shape {tuple(y.shape)}; this estimator expects (B, {self.dim})")
        if labels.reshape(-1).shape[0] != y.shape[0]:
            raise ValueError(f"{labels.reshape(-1).shape[0]} labels for {y.shape[0]} samples")
        if (labels >= self.num_components).any():
            raise ValueError(f"component labels must be < num_components={self.num_components}")

    def estimate(self, y: Tensor, labels: Tensor) -> EntropyEstimate:
        """Entropy lower bound of the mixture on ``y`` (``(B, dim)``) plus the memory.

        ``labels`` ``(B,)`` holds component indices in ``[0, num_components)``;
        negative labels are ignored. Computed in float64 without autocast.
        """
        self._check(y, labels)
        labels = labels.reshape(-1).long()
        with torch.autocast(y.device.type, enabled=False):
            z = y.double()
            mem_z, mem_labels = self._memory_samples()
            all_z = torch.cat([z, mem_z.to(z)], dim=0)
            all_labels = torch.cat([labels, mem_labels.to(labels.device)], dim=0)
            entropies, used, counts = [], [], []
            for c in range(self.num_components):
                rows = all_labels == c
                n = int(rows.sum())
                counts.append(n)
                if n < self.min_samples:
                    continue
                cov = regularized_covariance(all_z[rows], self.shrinkage, self.eps)
                logdet = stable_logdet(cov)
                entropies.append(gaussian_entropy(self.dim, logdet) if self.include_constant else 0.5 * logdet)
                used.append(c)
            if not entropies:
                return EntropyEstimate(None, used, counts)
            return EntropyEstimate(torch.stack(entropies).mean().to(y.dtype), used, counts)

    def forward(self, y: Tensor, labels: Tensor, update: bool = False) -> EntropyEstimate:
        """:meth:`estimate`, then :meth:`push` when ``update`` (MMIM Algorithm 1's order)."""
        est = self.estimate(y, labels)
        if update:
            self.push(y, labels)
        return est


def polarity_components(y: Tensor) -> Tensor:
    """MMIM's GMM components for a sentiment score: 0 = positive (y > 0), 1 = negative (y < 0), -1 = neither (y = 0)."""
    out = torch.full(y.shape, -1, dtype=torch.long, device=y.device)
    out[y > 0] = 0
    out[y < 0] = 1
    return out


# ---------------------------------------------------------------------------
# CPC / InfoNCE
# ---------------------------------------------------------------------------
def info_nce(prediction: Tensor, target: Tensor, temperature: float = 1.0) -> Tensor:
    """InfoNCE loss with in-batch negatives on L2-normalised vectors (MMIM eq. 11).

    Row ``i`` scores its prediction against every target in the batch,
    ``s_ij = exp(<p_i, t_j> / temperature)`` with unit vectors ``p, t``; the loss is
    ``-mean_i log(s_ii / sum_j s_ij)`` (cross-entropy with the diagonal as the
    positives). It is >= 0, so the MI estimate ``log N - loss`` never exceeds ``log N``.
    """
    if prediction.shape != target.shape or prediction.dim() != 2:
        raise ValueError(f"info_nce needs two (N, D) tensors of one shape, got {tuple(prediction.shape)} "
                         f"and {tuple(target.shape)}")
    p = F.normalize(prediction, dim=-1)
    t = F.normalize(target, dim=-1)
    logits = p @ t.T / temperature
    labels = torch.arange(p.shape[0], device=p.device)
    return F.cross_entropy(logits, labels)


def info_nce_bound(loss: Tensor, batch_size: int) -> Tensor:
    """The InfoNCE MI lower bound ``log N - loss`` (at most ``log N``)."""
    return math.log(batch_size) - loss


class ContrastivePredictor(nn.Module):
    """CPC between a context ``z`` and a target ``h``: ``G(z)`` predicts ``h`` (MMIM eqs. 10-12).

    ``G`` is a linear map (as in the MMIM reference) or an MLP with ``hidden``
    units. :meth:`forward` returns the InfoNCE loss; :meth:`score` the per-sample
    fusion-modality score ``s(h, z) = exp(<h/|h|, G(z)/|G(z)|>)`` (eq. 10), which
    lies in ``[1/e, e]`` and whose log is the cosine similarity.
    """

    def __init__(self, z_dim: int, h_dim: int, hidden: int | None = None, temperature: float = 1.0) -> None:
        super().__init__()
        if hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, h_dim))
        else:
            self.net = nn.Linear(z_dim, h_dim)
        self.temperature = float(temperature)

    def forward(self, z: Tensor, h: Tensor) -> Tensor:
        """InfoNCE loss of predicting ``h`` from ``z`` against the batch's other ``h``."""
        return info_nce(self.net(z), h, self.temperature)

    def score(self, z: Tensor, h: Tensor) -> Tensor:
        """Per-sample score ``s(h_i, z_i)`` ``(B,)`` (eq. 10)."""
        cos = (F.normalize(self.net(z), dim=-1) * F.normalize(h, dim=-1)).sum(-1)
        return torch.exp(cos / self.temperature)


__all__ = [
    "LIKELIHOOD_FORMS", "BAEstimate", "BarberAgakov", "ContrastivePredictor", "EntropyEstimate", "GMMEntropy", "GaussianConditional",
    "RandomProjection", "gaussian_entropy", "info_nce", "info_nce_bound", "polarity_components", "regularized_covariance",
    "stable_logdet",
]
