"""Self-supervised label generation from class centres (MCER's SLGM and CLGM; after Self-MM).

A multimodal regression target ``y_m`` (a sentiment score) supervises a
*reference* representation (MCER: the fused ``F'_m``). For every other *view*
(a unimodal representation ``H_s`` for the SLGM, a modality-dominated
cross-modal representation ``h_c`` for the CLGM) a label is generated that
shifts ``y_m`` towards the polarity the view's representation sits on:

* each view (and the reference) has a positive and a negative class centre, the
  means of its representations over the training samples whose (generated)
  label is > 0 and < 0 (label 0 belongs to neither);
* the relative distance ``alpha = (D_n - D_p) / D_p`` (``D_p``, ``D_n``: L2
  distances to the positive and negative centres) is large when the
  representation is near the positive centre;
* the new label is ``y_m + delta`` with
  ``delta = (alpha_v - alpha_m) / 2 * (y_m + alpha_m) / alpha_m`` (MCER eq. 30,
  Self-MM's form), clipped to ``[-bound, bound]``;
* labels are smoothed over epochs: ``y^(1) = y_m`` and
  ``y^(i) = (i - 1)/(i + 1) y^(i-1) + 2/(i + 1) y_new`` (eq. 31);
* the task weight of a view's loss is ``tanh(|y_gen - y_m|)`` (eq. 32), so a
  view whose generated label equals ``y_m`` (e.g. in the first epoch) is not
  trained by it.

Centres are computed once per epoch: during epoch ``i`` the (detached)
representations of every training batch are added to running sums split by
the current label sign, and at the end of the epoch they become the centres
that epoch ``i + 1``'s updates use. (Self-MM refreshes them per batch from a
bank of every sample's latest representation; both use representations up to
one epoch old, and this form keeps O(d) state instead of O(N d).)

All state lives in buffers: the per-sample labels ``(V, N)`` and the targets
(sized by the dataset with :meth:`CentroidLabelGenerator.allocate`), the
centres, the running sums and the epoch counter, so checkpoints and
``--resume`` restore it; :meth:`_load_from_state_dict` resizes the per-sample
buffers to the saved size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmib.errors import ConfigError

#: Guard against division by (nearly) zero distances and relative distances.
EPS = 1e-8


def relative_distance(x: Tensor, pos: Tensor, neg: Tensor, eps: float = EPS) -> Tensor:
    """``alpha = (D_n - D_p) / D_p`` per row of ``x`` ``(B, d)`` for centres ``pos``, ``neg`` ``(d,)``."""
    d_p = torch.linalg.vector_norm(x - pos, dim=-1)
    d_n = torch.linalg.vector_norm(x - neg, dim=-1)
    return (d_n - d_p) / (d_p + eps)


def shifted_labels(y_m: Tensor, alpha_view: Tensor, alpha_ref: Tensor, bound: float | None = None,
                   eps: float = EPS) -> Tensor:
    """Eq. 30: ``y_m + (alpha_v - alpha_m)/2 * (y_m + alpha_m)/alpha_m``, clipped to ``[-bound, bound]``.

    ``alpha_m`` is kept at least ``eps`` away from zero (keeping its sign), as
    Self-MM adds a small constant to it.
    """
    safe = torch.where(alpha_ref >= 0, alpha_ref.clamp_min(eps), alpha_ref.clamp_max(-eps))
    out = y_m + 0.5 * (alpha_view - alpha_ref) * (y_m + alpha_ref) / safe
    return out.clamp(-bound, bound) if bound is not None else out


def momentum(previous: Tensor, new: Tensor, epoch: int) -> Tensor:
    """Eq. 31 for epoch ``i >= 2``: ``(i - 1)/(i + 1) previous + 2/(i + 1) new``."""
    if epoch < 2:
        raise ValueError(f"the momentum update starts at epoch 2, got {epoch}")
    return (epoch - 1) / (epoch + 1) * previous + 2.0 / (epoch + 1) * new


def task_weight(generated: Tensor, y_m: Tensor) -> Tensor:
    """Eq. 32's per-sample weight ``tanh(|y_gen - y_m|)``."""
    return torch.tanh((generated - y_m).abs())


def weighted_l1(prediction: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """``mean(w * |prediction - target|)`` (Self-MM's weighted loss)."""
    return (weight * (prediction - target).abs()).mean()


class CentroidLabelGenerator(nn.Module):
    """Generated labels for named views of the training samples, from class centres.

    Args:
        views: ``{name: width}`` of each view's representation.
        reference_dim: width of the reference representation (MCER: ``F'_m``).
        bound: generated labels are clipped to ``[-bound, bound]`` (None: the largest
            ``|y|`` of the training samples given to :meth:`allocate`).

    Use: :meth:`allocate` once with the dataset's targets and training indices;
    per training batch :meth:`labels` / :meth:`weights` (for the loss, before the
    update) then :meth:`update` with the batch's detached representations; at the
    end of each epoch :meth:`end_epoch`. Without :meth:`allocate` the generator
    returns the multimodal labels themselves and never updates.
    """

    def __init__(self, views: Mapping[str, int], reference_dim: int, bound: float | None = None) -> None:
        super().__init__()
        if not views:
            raise ConfigError("a label generator needs at least one view")
        if bound is not None and bound <= 0:
            raise ConfigError(f"label bound must be > 0, got {bound}")
        self.view_names: tuple[str, ...] = tuple(views)
        self.dims = {"ref": int(reference_dim), **{f"v{i}": int(d) for i, d in enumerate(views.values())}}
        self.fixed_bound = bound
        self.register_buffer("y_m", torch.zeros(0))
        self.register_buffer("generated", torch.zeros(len(self.view_names), 0))
        self.register_buffer("is_train", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("bound", torch.tensor(float(bound) if bound is not None else 0.0))
        #: completed epochs (the epoch in progress is ``epoch + 1``)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        for key, d in self.dims.items():
            self.register_buffer(f"centre_{key}", torch.zeros(2, d))  # rows: positive, negative
            self.register_buffer(f"centre_ok_{key}", torch.zeros(2, dtype=torch.bool))
            self.register_buffer(f"sum_{key}", torch.zeros(2, d, dtype=torch.float64))
            self.register_buffer(f"count_{key}", torch.zeros(2, dtype=torch.float64))

    # ------------------------------------------------------------------ state
    @property
    def allocated(self) -> bool:
        return self.y_m.numel() > 0

    def _key(self, view: str) -> str:
        try:
            return f"v{self.view_names.index(view)}"
        except ValueError:
            raise KeyError(f"unknown view {view!r}; views: {', '.join(self.view_names)}") from None

    @torch.no_grad()
    def allocate(self, y: Tensor, train_index: Tensor) -> None:
        """Size the per-sample buffers for ``len(y)`` samples; labels start at ``y_m`` (eq. 31, ``i = 1``).

        Only the training samples' targets are kept (the others stay 0 and are never used).
        """
        if y.dim() != 1 or not y.is_floating_point():
            raise ConfigError("label generation needs a real-valued target of shape (N,) (a regression task)")
        n = y.shape[0]
        dev = self.epoch.device
        train_index = train_index.to(dev)
        self.is_train = torch.zeros(n, dtype=torch.bool, device=dev)
        self.is_train[train_index] = True
        self.y_m = torch.zeros(n, device=dev)
        self.y_m[train_index] = y.to(dev)[train_index].float()
        self.generated = self.y_m.unsqueeze(0).repeat(len(self.view_names), 1)
        if self.fixed_bound is None:
            self.bound.fill_(float(self.y_m[train_index].abs().max()) if train_index.numel() else 1.0)
        self.epoch.zero_()
        for key in self.dims:
            getattr(self, f"centre_{key}").zero_()
            getattr(self, f"centre_ok_{key}").zero_()
        self._reset_sums()

    def _reset_sums(self) -> None:
        for key in self.dims:
            getattr(self, f"sum_{key}").zero_()
            getattr(self, f"count_{key}").zero_()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # type: ignore[no-untyped-def]
        # Per-sample buffers follow the dataset size: take the saved size before loading.
        for name in ("y_m", "generated", "is_train"):
            saved = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(saved, Tensor) and saved.dim() == current.dim() and saved.shape[:-1] == current.shape[:-1]:
                setattr(self, name, torch.empty(saved.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------ reading
    def labels(self, index: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Generated labels of the samples ``index`` per view (``y`` itself when not allocated)."""
        if not self.allocated:
            return {v: y for v in self.view_names}
        gen = self.generated[:, index.to(self.generated.device)].to(y.dtype)
        return {v: gen[i] for i, v in enumerate(self.view_names)}

    def weights(self, index: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Eq. 32's ``tanh(|y_gen - y_m|)`` per view for the samples ``index``."""
        return {v: task_weight(lab, y) for v, lab in self.labels(index, y).items()}

    def centres(self, view: str | None = None) -> tuple[Tensor, Tensor]:
        """``(positive, negative)`` centre of ``view`` (None: the reference)."""
        c = getattr(self, "centre_ref" if view is None else f"centre_{self._key(view)}")
        return c[0], c[1]

    @torch.no_grad()
    def set_centres(self, view: str | None, positive: Tensor, negative: Tensor) -> None:
        """Set the centres of ``view`` (None: the reference) by hand (tests, analyses)."""
        key = "ref" if view is None else self._key(view)
        c = getattr(self, f"centre_{key}")
        c[0].copy_(positive)
        c[1].copy_(negative)
        getattr(self, f"centre_ok_{key}").fill_(True)

    def ready(self, view: str | None = None) -> bool:
        key = "ref" if view is None else self._key(view)
        return bool(getattr(self, f"centre_ok_{key}").all())

    def sample(self, index: Tensor) -> dict[str, list[float]]:
        """``{"m": y_m, view: generated}`` as lists for the samples ``index`` (for logs)."""
        idx = index.to(self.y_m.device)
        out = {"m": self.y_m[idx].tolist()}
        for i, v in enumerate(self.view_names):
            out[v] = self.generated[i, idx].tolist()
        return out

    def summary(self) -> dict[str, float]:
        """Per view over the training samples: mean ``|y_gen - y_m|`` and mean task weight."""
        if not self.allocated or not bool(self.is_train.any()):
            return {}
        y = self.y_m[self.is_train]
        out: dict[str, float] = {}
        for i, v in enumerate(self.view_names):
            g = self.generated[i, self.is_train]
            out[f"offset_{v}"] = float((g - y).abs().mean())
            out[f"weight_{v}"] = float(task_weight(g, y).mean())
        return out

    # ------------------------------------------------------------------ updating
    @torch.no_grad()
    def update(self, index: Tensor, reference: Tensor, views: Mapping[str, Tensor]) -> None:
        """One training batch: from epoch 2 on, move the batch's labels (eqs. 30-31) using last
        epoch's centres; then add the representations to this epoch's centre sums."""
        if not self.allocated:
            return
        idx = index.to(self.y_m.device)
        keep = self.is_train[idx]
        if not bool(keep.all()):  # only training samples have labels to generate
            idx, reference = idx[keep], reference[keep]
            views = {k: v[keep] for k, v in views.items()}
        if idx.numel() == 0:
            return
        y = self.y_m[idx]
        current_epoch = int(self.epoch) + 1
        bound = float(self.bound)
        ref = reference.detach().float()
        if current_epoch >= 2 and self.ready(None):
            alpha_ref = relative_distance(ref, *self.centres(None))
            for name, rep in views.items():
                if name not in self.view_names:
                    raise KeyError(f"unknown view {name!r}; views: {', '.join(self.view_names)}")
                if not self.ready(name):
                    continue
                alpha_v = relative_distance(rep.detach().float(), *self.centres(name))
                new = shifted_labels(y, alpha_v, alpha_ref, bound)
                i = self.view_names.index(name)
                self.generated[i, idx] = momentum(self.generated[i, idx], new, current_epoch)
        self._accumulate("ref", ref, y)
        for name, rep in views.items():
            i = self.view_names.index(name)
            self._accumulate(f"v{i}", rep.detach().float(), self.generated[i, idx])

    def _accumulate(self, key: str, x: Tensor, labels: Tensor) -> None:
        s, c = getattr(self, f"sum_{key}"), getattr(self, f"count_{key}")
        for row, members in enumerate((labels > 0, labels < 0)):
            if bool(members.any()):
                s[row] += x[members].double().sum(0)
                c[row] += float(members.sum())

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Turn this epoch's sums into the centres (a class without samples keeps its old centre)."""
        if not self.allocated:
            return
        for key in self.dims:
            s, c = getattr(self, f"sum_{key}"), getattr(self, f"count_{key}")
            centre, ok = getattr(self, f"centre_{key}"), getattr(self, f"centre_ok_{key}")
            for row in range(2):
                if c[row] > 0:
                    centre[row] = (s[row] / c[row]).to(centre.dtype)
                    ok[row] = True
        self._reset_sums()
        self.epoch += 1

    def extra_repr(self) -> str:
        return f"views={list(self.view_names)}, dims={self.dims}"


def evenly_spaced(index: Tensor, k: int) -> Tensor:
    """``k`` entries of ``index`` at evenly spaced positions (all when ``k >= len``)."""
    n = index.numel()
    if k <= 0 or n == 0:
        return index[:0]
    if k >= n:
        return index.clone()
    pos = torch.linspace(0, n - 1, k).round().long()
    return index[pos]


__all__ = [
    "CentroidLabelGenerator", "evenly_spaced", "momentum", "relative_distance", "shifted_labels", "task_weight",
    "weighted_l1",
]
