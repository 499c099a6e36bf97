"""Fusion operators: a sequence of K modality tensors in, one tensor out.

Every operator is an ``nn.Module`` subclassing :class:`Fusion`, built from the
input widths ``in_dims`` and exposing ``out_dim``; ``forward(xs)`` takes a
sequence of ``(B, d_m)`` tensors (in the order of ``in_dims``) and returns
``(B, out_dim)``. Parameters are registered (``nn.ModuleList``/``nn.Parameter``)
and nothing is tied to a device. :func:`build_fusion` picks one by name.

Operators (MIB paper, Appendix and Section IV-F):

* ``concat``: ``[x_1; ...; x_K]``.
* ``add`` / ``mul``: element-wise sum / product (equal widths).
* ``tensor`` (TFN, Zadeh et al. 2017): the flattened outer product of the
  ``[x_m; 1]``; its width is ``prod(d_m + 1)``, so it is limited to three
  modalities and a size cap (use ``lmf`` beyond that). With ``hidden > 0`` a
  post-fusion network follows, as in TFN and the MIB reference: dropout and three
  ``tanh`` layers (``size -> hidden -> hidden -> out_dim``).
* ``lmf`` (low-rank multimodal fusion, Liu et al. 2018): the same multilinear map
  as tensor fusion followed by a linear layer, with the weight tensor of rank R
  (``sum_r w_r prod_m ([x_m; 1] W_m^(r))``), linear in K.
* ``graph`` (ARGF-style graph fusion, Mai et al. 2020, as in the MIB reference):
  unimodal nodes weighted by learned importances; a bimodal node for every pair
  from one network ``g1: 2d -> 64 -> d``; trimodal nodes from a second network
  ``g2`` for every two bimodal nodes sharing one modality and for every bimodal
  node with each modality outside it (6 nodes for three modalities); every level
  weighted by a softmax over learned similarity scores; the output
  ``[unimodal; sum of bimodal; sum of trimodal]`` goes through a ``tanh`` MLP
  (``3d -> hidden -> hidden -> out_dim``) when ``hidden > 0``.
* ``poe``: product of Gaussian experts (MIB eq. 19) over per-modality posteriors
  ``N(mu_m, std_m^2)`` with the prior expert ``N(0, I)``. It takes posteriors,
  not vectors: each input is ``pack_posterior(mu_m, std_m)`` (``(B, 2k)``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmib.errors import ConfigError

FUSIONS: dict[str, str] = {
    "concat": "concatenation [x_1; ...; x_K]",
    "add": "element-wise sum (equal widths)",
    "mul": "element-wise product (equal widths)",
    "tensor": "tensor fusion (TFN): outer product of [x_m; 1]; at most 3 modalities",
    "lmf": "low-rank tensor fusion (LMF), any number of modalities",
    "graph": "ARGF-style graph fusion: unimodal, bimodal and trimodal nodes with learned weights",
    "poe": "product of Gaussian experts with the N(0, I) prior (inputs are posteriors; L-MIB/C-MIB)",
}
ALIASES = {"concatenation": "concat", "cat": "concat", "addition": "add", "sum": "add", "multiplication": "mul",
           "product": "mul", "tfn": "tensor", "low-rank": "lmf", "argf": "graph", "product-of-experts": "poe"}

#: Default cap on the width of a tensor-fusion output (prod(d_m + 1)); the MIB reference's
#: three 50-d inputs give 51^3 = 132,651.
TENSOR_MAX_SIZE = 200_000


def tanh_mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Dropout and three ``tanh`` layers ``in -> hidden -> hidden -> out`` (TFN's post-fusion network,
    the MIB reference's output network of tensor and graph fusion)."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, out_dim), nn.Tanh(),
    )


class Fusion(nn.Module):
    """Base class: validates the inputs and optionally projects each to ``proj_dim`` first.

    Args:
        in_dims: width of each modality's input, in input order.
        proj_dim: when given, each input passes through its own ``Linear(d_m, proj_dim)``
            before fusing (lets operators that need equal or small widths take any input).
    """

    takes_posteriors: ClassVar[bool] = False
    min_inputs: ClassVar[int] = 1

    def __init__(self, in_dims: Sequence[int], proj_dim: int | None = None) -> None:
        super().__init__()
        dims = tuple(int(d) for d in in_dims)
        name = type(self).__name__
        if len(dims) < self.min_inputs:
            raise ConfigError(f"{name} needs at least {self.min_inputs} modalities, got {len(dims)}")
        if any(d < 1 for d in dims):
            raise ConfigError(f"{name}: input widths must be positive, got {list(dims)}")
        if proj_dim is not None and int(proj_dim) < 1:
            raise ConfigError(f"{name}: proj_dim must be positive, got {proj_dim}")
        self.in_dims = dims
        self.proj = nn.ModuleList(nn.Linear(d, int(proj_dim)) for d in dims) if proj_dim else None
        self.widths: tuple[int, ...] = tuple(int(proj_dim) for _ in dims) if proj_dim else dims
        self.out_dim = 0

    def _inputs(self, xs: Sequence[Tensor]) -> list[Tensor]:
        if len(xs) != len(self.in_dims):
            raise ValueError(f"{type(self).__name__} was built for {len(self.in_dims)} inputs, got {len(xs)}")
        for i, (x, d) in enumerate(zip(xs, self.in_dims)):
            if x.dim() != 2 or x.shape[-1] != d:
                raise ValueError(f"{type(self).__name__}: input {i} has shape {tuple(x.shape)}; expected (B, {d})")
        if self.proj is None:
            return list(xs)
        return [p(x) for p, x in zip(self.proj, xs)]

    def _equal_widths(self, what: str) -> int:
        if len(set(self.widths)) != 1:
            raise ConfigError(
                f"{what} needs inputs of equal width, got {list(self.widths)}; set a common projection width "
                "(proj_dim / the model option fusion_dim) or use fusion='concat'"
            )
        return self.widths[0]

    def forward(self, xs: Sequence[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ConcatFusion(Fusion):
    """``[x_1; ...; x_K]`` (width ``sum d_m``)."""

    def __init__(self, in_dims: Sequence[int], proj_dim: int | None = None) -> None:
        super().__init__(in_dims, proj_dim)
        self.out_dim = sum(self.widths)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return torch.cat(self._inputs(xs), dim=-1)


class AddFusion(Fusion):
    """Element-wise sum ``sum_m x_m`` (equal widths)."""

    def __init__(self, in_dims: Sequence[int], proj_dim: int | None = None) -> None:
        super().__init__(in_dims, proj_dim)
        self.out_dim = self._equal_widths("addition fusion")

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return torch.stack(self._inputs(xs)).sum(0)


class MulFusion(Fusion):
    """Element-wise product ``prod_m x_m`` (equal widths)."""

    def __init__(self, in_dims: Sequence[int], proj_dim: int | None = None) -> None:
        super().__init__(in_dims, proj_dim)
        self.out_dim = self._equal_widths("multiplication fusion")

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return torch.stack(self._inputs(xs)).prod(0)


def _append_one(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)


class TensorFusion(Fusion):
    """TFN: the flattened outer product ``[x_1; 1] (x) ... (x) [x_K; 1]``, then optionally TFN's
    post-fusion network (``hidden > 0``: dropout, ``tanh`` layers to ``out_dim``, default ``hidden``).

    The product keeps every unimodal, bimodal and trimodal product term; its width
    ``prod(d_m + 1)`` grows exponentially in K, so more than ``max_modalities``
    inputs or a width above ``max_size`` is refused (use ``lmf``, which computes a
    low-rank version of the same map in linear size, or a smaller ``proj_dim``).
    """

    max_modalities: ClassVar[int] = 3

    def __init__(
        self, in_dims: Sequence[int], proj_dim: int | None = None, max_size: int = TENSOR_MAX_SIZE, hidden: int = 0,
        out_dim: int | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__(in_dims, proj_dim)
        k = len(self.widths)
        if k > self.max_modalities:
            raise ConfigError(
                f"tensor fusion is limited to {self.max_modalities} modalities (its width prod(d_m + 1) grows "
                f"exponentially); got {k}: use fusion='lmf' (low-rank tensor fusion) instead"
            )
        size = math.prod(d + 1 for d in self.widths)
        if size > max_size:
            raise ConfigError(
                f"tensor fusion of widths {list(self.widths)} has {size} features (limit {max_size}); "
                "project to a smaller width (fusion_dim) or use fusion='lmf' (low-rank tensor fusion)"
            )
        self.size = size
        self.post = tanh_mlp(size, hidden, int(out_dim or hidden), dropout) if hidden else None
        self.out_dim = int(out_dim or hidden) if hidden else size

    def product(self, xs: Sequence[Tensor]) -> Tensor:
        """The flattened outer product ``(B, prod(d_m + 1))`` (before any post-fusion network)."""
        parts = [_append_one(x) for x in self._inputs(xs)]
        out = parts[0]
        for p in parts[1:]:
            out = (out.unsqueeze(-1) * p.unsqueeze(1)).flatten(1)
        return out

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        out = self.product(xs)
        return self.post(out) if self.post is not None else out


class LowRankFusion(Fusion):
    """LMF: ``sum_r w_r prod_m ([x_m; 1] W_m^(r)) + b`` with ``W_m^(r)`` of shape ``(d_m + 1, out_dim)``.

    Equals tensor fusion followed by a linear layer whose weight tensor is the rank-R
    sum ``sum_r w_r W_1^(r) (x) ... (x) W_K^(r)``; cost and size are linear in K.
    """

    def __init__(
        self, in_dims: Sequence[int], out_dim: int | None = None, rank: int = 4, proj_dim: int | None = None
    ) -> None:
        super().__init__(in_dims, proj_dim)
        if rank < 1:
            raise ConfigError(f"low-rank fusion needs rank >= 1, got {rank}")
        self.out_dim = int(out_dim or max(self.widths))
        self.rank = int(rank)
        self.factors = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, d + 1, self.out_dim))) for d in self.widths
        )
        self.fusion_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)).squeeze(0))
        self.bias = nn.Parameter(torch.zeros(self.out_dim))

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        prod: Tensor | None = None
        for x, w in zip(self._inputs(xs), self.factors):
            f = torch.einsum("bd,rdo->rbo", _append_one(x), w)
            prod = f if prod is None else prod * f
        assert prod is not None
        return torch.einsum("r,rbo->bo", self.fusion_weights, prod) + self.bias


class GraphFusion(Fusion):
    """ARGF-style graph fusion as in the MIB reference code, generalised to K >= 2 equal-width inputs.

    * unimodal layer: importance ``s_m = tanh(a(x_m))`` (one shared linear scorer);
      node ``u = mean_m s_m x_m``;
    * bimodal layer: for each pair (i, j) a node ``b_ij = tanh(w_ij g1([x_i; x_j]))`` with
      ``w = softmax_pairs((s_i + s_j) / (<softmax x_i, softmax x_j> + 0.5))``
      (pairs whose inputs are less alike and more important weigh more) and
      ``g1: 2d -> graph_hidden -> d`` (LeakyReLU 0.2, tanh);
    * trimodal layer (K >= 3), from a second network ``g2`` of the same shape: for every
      two bimodal nodes sharing one modality, ``tanh(w g2([b_p; b_q]))`` with the score
      ``(S_p + S_q) / (<softmax g1_p, softmax g1_q> + 0.5)``, and for every bimodal node
      with each modality k outside it, ``tanh(w g2([b_p; x_k]))`` with the score
      ``(S_p + s_k) / (<softmax g1_p, softmax x_k> + 0.5)`` (``S`` the bimodal scores,
      ``g1_p`` the unweighted g1 output); one softmax over all trimodal scores. Three
      modalities give the reference's 3 + 3 = 6 trimodal nodes.

    The fused vector ``[unimodal; sum of bimodal nodes; sum of trimodal nodes]`` (width
    ``3 d``; ``2 d`` for two modalities, which have no trimodal nodes) goes through the
    reference's output network ``tanh_mlp(3d, hidden, out_dim)`` when ``hidden > 0``.
    """

    min_inputs = 2

    def __init__(
        self, in_dims: Sequence[int], proj_dim: int | None = None, dropout: float = 0.0, hidden: int = 0,
        out_dim: int | None = None, graph_hidden: int = 64,
    ) -> None:
        super().__init__(in_dims, proj_dim)
        d = self._equal_widths("graph fusion")
        k = len(self.widths)
        self.attention = nn.Linear(d, 1)
        self.bimodal_net = self._pair_net(d, graph_hidden)
        self.dropout = nn.Dropout(dropout)
        self.pairs = list(itertools.combinations(range(k), 2))
        # trimodal nodes: (bimodal, bimodal) sharing one modality, and (bimodal, unimodal outside it)
        self.triples = [
            (p, q) for p, q in itertools.combinations(range(len(self.pairs)), 2)
            if len(set(self.pairs[p]) & set(self.pairs[q])) == 1
        ]
        self.pair_modality = [(p, m) for p, pair in enumerate(self.pairs) for m in range(k) if m not in pair]
        self.trimodal_net = self._pair_net(d, graph_hidden) if self.triples or self.pair_modality else None
        self.width = d
        fused = d * (3 if self.trimodal_net is not None else 2)
        self.post = tanh_mlp(fused, hidden, int(out_dim or hidden)) if hidden else None
        self.out_dim = int(out_dim or hidden) if hidden else fused

    @staticmethod
    def _pair_net(d: int, hidden: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(2 * d, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, d), nn.Tanh())

    @staticmethod
    def _affinity(a: Tensor, b: Tensor) -> Tensor:
        return (F.softmax(a, -1) * F.softmax(b, -1)).sum(-1, keepdim=True) + 0.5

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        x = [self.dropout(t) for t in self._inputs(xs)]
        s = [torch.tanh(self.attention(t)) for t in x]  # (B, 1) importance per modality
        unimodal = torch.stack([si * xi for si, xi in zip(s, x)]).mean(0)
        pair_score = torch.cat([(s[i] + s[j]) / self._affinity(x[i], x[j]) for i, j in self.pairs], dim=1)
        pair_w = F.softmax(pair_score, dim=1)
        pre = [self.bimodal_net(torch.cat([x[i], x[j]], -1)) for i, j in self.pairs]
        nodes = [torch.tanh(pair_w[:, n : n + 1] * pre[n]) for n in range(len(self.pairs))]
        out = [unimodal, torch.stack(nodes).sum(0)]
        if self.trimodal_net is not None:
            scores = [(pair_score[:, p : p + 1] + pair_score[:, q : q + 1]) / self._affinity(pre[p], pre[q])
                      for p, q in self.triples]
            scores += [(pair_score[:, p : p + 1] + s[m]) / self._affinity(pre[p], x[m]) for p, m in self.pair_modality]
            tri_w = F.softmax(torch.cat(scores, dim=1), dim=1)
            inputs = [torch.cat([nodes[p], nodes[q]], -1) for p, q in self.triples]
            inputs += [torch.cat([nodes[p], x[m]], -1) for p, m in self.pair_modality]
            tri = [torch.tanh(tri_w[:, n : n + 1] * self.trimodal_net(v)) for n, v in enumerate(inputs)]
            out.append(torch.stack(tri).sum(0))
        fused = torch.cat(out, dim=-1)
        return self.post(fused) if self.post is not None else fused


def pack_posterior(mu: Tensor, std: Tensor) -> Tensor:
    """``[mu; std]`` along the last axis: the input format of :class:`PoEFusion`."""
    return torch.cat([mu, std], dim=-1)


def product_of_experts(
    mus: Sequence[Tensor], stds: Sequence[Tensor], prior: bool = True, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Product of diagonal Gaussian experts (MIB eq. 19): precision-weighted mean.

    ``var = 1 / (1 + sum_m 1 / var_m)`` and ``mu = var * sum_m mu_m / var_m``, where
    the ``1`` is the prior expert N(0, I) (dropped with ``prior=False``).
    Returns ``(mu, std)``.
    """
    precisions = [1.0 / (s.pow(2) + eps) for s in stds]
    total = torch.stack(precisions).sum(0)
    if prior:
        total = total + 1.0
    mu = torch.stack([m * p for m, p in zip(mus, precisions)]).sum(0) / total
    return mu, total.rsqrt()


class PoEFusion(Fusion):
    """Product of Gaussian experts over the modalities' posteriors, with the N(0, I) prior.

    ``in_dims`` are the latent widths ``k`` (all equal); each input is
    ``pack_posterior(mu_m, std_m)`` of shape ``(B, 2k)``. The output is a sample
    ``mu + std * eps`` of the product while training and its mean at evaluation.
    """

    takes_posteriors = True

    def __init__(self, in_dims: Sequence[int], prior: bool = True, eps: float = 1e-8) -> None:
        super().__init__(in_dims)
        self.out_dim = self._equal_widths("product-of-experts fusion")
        self.prior = prior
        self.eps = eps

    def posterior(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(mu, std)`` of the product of the experts packed in ``xs``."""
        k = self.out_dim
        if len(xs) != len(self.in_dims):
            raise ValueError(f"PoEFusion was built for {len(self.in_dims)} inputs, got {len(xs)}")
        for i, x in enumerate(xs):
            if x.dim() != 2 or x.shape[-1] != 2 * k:
                raise ValueError(f"PoEFusion: input {i} has shape {tuple(x.shape)}; expected packed (B, {2 * k})")
        return product_of_experts([x[:, :k] for x in xs], [x[:, k:] for x in xs], self.prior, self.eps)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        mu, std = self.posterior(xs)
        return mu + std * torch.randn_like(std) if self.training else mu


def fusion_name(name: str) -> str:
    """Canonical operator name (aliases such as ``tfn`` accepted); ConfigError if unknown."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FUSIONS:
        from mmib.config import suggest

        raise ConfigError(f"unknown fusion {name!r}{suggest(name, FUSIONS)}; choose from {', '.join(FUSIONS)}")
    return key


def build_fusion(
    name: str,
    in_dims: Sequence[int],
    proj_dim: int | None = None,
    out_dim: int | None = None,
    rank: int = 4,
    max_size: int = TENSOR_MAX_SIZE,
    dropout: float = 0.0,
    hidden: int = 0,
) -> Fusion:
    """The fusion operator ``name`` for inputs of widths ``in_dims``.

    ``proj_dim`` projects each input first (not for ``poe``); ``rank`` applies to
    ``lmf``; ``out_dim`` is the output width of ``lmf`` and of the post-fusion networks;
    ``hidden > 0`` adds the post-fusion ``tanh`` network of ``tensor`` and ``graph``
    (0: their raw fused vector); ``max_size`` caps tensor fusion's width; ``dropout``
    applies to ``graph``'s inputs and before tensor fusion's post-fusion network.
    """
    key = fusion_name(name)
    if key == "concat":
        return ConcatFusion(in_dims, proj_dim)
    if key == "add":
        return AddFusion(in_dims, proj_dim)
    if key == "mul":
        return MulFusion(in_dims, proj_dim)
    if key == "tensor":
        return TensorFusion(in_dims, proj_dim, max_size, hidden, out_dim, dropout)
    if key == "lmf":
        return LowRankFusion(in_dims, out_dim, rank, proj_dim)
    if key == "graph":
        return GraphFusion(in_dims, proj_dim, dropout, hidden, out_dim)
    if proj_dim:
        raise ConfigError("product-of-experts fusion combines posteriors as they are; it takes no projection (fusion_dim)")
    return PoEFusion(in_dims)


__all__ = [
    "ALIASES", "FUSIONS", "AddFusion", "ConcatFusion", "Fusion", "GraphFusion", "LowRankFusion", "MulFusion",
    "PoEFusion", "TensorFusion", "build_fusion", "fusion_name", "pack_posterior", "product_of_experts", "tanh_mlp",
]
