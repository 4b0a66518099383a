"""RQ-VAE (TIGER; SPEC section 3): MLP encoder -> residual quantiser (L codebooks of K codes) ->
MLP decoder.

Loss (per item, then mean over items):
    ||x - x_hat||^2  (summed over dimensions: averaging it over dimensions makes it ~D times
                      weaker than the quantisation terms, one known cause of collapse)
  + sum_l ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2
with r_1 = z, e_l = nearest code of r_l at level l, r_{l+1} = r_l - e_l. The decoder reads
z + sg[z_hat - z] (straight-through), so reconstruction gradients reach the encoder while the
codebooks only learn from the codebook term (``ste``) or from EMA cluster averages (``ema``).
``r_{l+1}`` uses sg[e_l], so a level's codes are moved only by its own codebook term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genrec_core.errors import GenrecError
from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.kmeans import kmeans, nearest

_EPS = 1e-5  # Laplace smoothing of EMA cluster sizes


@dataclass
class RQVAEConfig:
    """Everything needed to rebuild the network from a checkpoint (stored beside its weights)."""

    input_dim: int
    levels: int = 3
    codebook_size: int = 256
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    latent_dim: int = 32
    dropout: float = 0.0
    beta: float = 0.25
    codebook_update: str = "ste"
    ema_decay: float = 0.99

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RQVAEConfig:
        return cls(**d)


def mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and dropout) between them; the last layer is linear, so the
    latent and the reconstruction are unconstrained."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@dataclass
class QuantizerOutput:
    """z_hat: sum of the chosen codes; codes [N, L]; residuals: r_1..r_L (detached), what each
    level quantised; codebook_loss / commitment_loss: per-item means summed over levels."""

    z_hat: torch.Tensor
    codes: torch.Tensor
    residuals: list[torch.Tensor]
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class ResidualQuantizer(nn.Module):
    """L codebooks [L, K, d]. Codebooks are a Parameter in both modes (same state_dict keys), but
    only require a gradient in ``ste`` mode; ``ema_count``/``ema_sum`` hold the EMA state."""

    def __init__(self, levels: int, codebook_size: int, dim: int, beta: float = 0.25, update: str = "ste", decay: float = 0.99):
        super().__init__()
        if update not in ("ste", "ema"):
            raise ValueError(f"codebook update must be 'ste' or 'ema', got {update!r}")
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.beta, self.update, self.decay = beta, update, decay
        # the VQ-VAE default: a tiny box around 0. Far from typical latents, hence k-means init.
        init = torch.empty(levels, codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.codebooks = nn.Parameter(init, requires_grad=(update == "ste"))
        self.register_buffer("ema_count", torch.ones(levels, codebook_size))
        self.register_buffer("ema_sum", init.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        r = z
        z_hat = torch.zeros_like(z)
        codes, residuals = [], []
        cb_loss = z.new_zeros(())
        commit = z.new_zeros(())
        for level in range(self.levels):
            book = self.codebooks[level]
            c, _ = nearest(r.detach(), book.detach())
            e = book[c]
            cb_loss = cb_loss + (r.detach() - e).pow(2).sum(-1).mean()
            commit = commit + (r - e.detach()).pow(2).sum(-1).mean()
            codes.append(c)
            residuals.append(r.detach())
            z_hat = z_hat + e.detach()
            r = r - e.detach()
        return QuantizerOutput(z_hat, torch.stack(codes, 1), residuals, cb_loss, commit)

    @torch.no_grad()
    def assign(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [N, L] and the last level's input r_L, without any loss bookkeeping."""
        r = z
        codes = []
        for level in range(self.levels):
            c, _ = nearest(r, self.codebooks[level])
            codes.append(c)
            if level < self.levels - 1:
                r = r - self.codebooks[level][c]
        return torch.stack(codes, 1), r

    def soft_assign(self, z: torch.Tensor, temperature: float = 1.0, residual_grad: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [N, L, K], hard codes [N, L]) with autograd to ``z`` and the codebooks.

        Level l: ``P(k | r_l) = softmax(-||r_l - e^l_k||^2 / temperature)``, hard code = the
        argmin of the distances (the same choice as ``assign``, ties to the lowest index), and
        ``r_{l+1} = r_l - e^l_{c_l}`` with the hard code, as the quantiser does (BLOGER, SPEC 8).
        ``residual_grad``: ``exact`` keeps the gradient of r_{l+1} to r_l and to the chosen code
        (the derivative of this function wherever the hard codes do not change, which is what a
        finite-difference check measures); ``straight_through`` detaches the chosen code like the
        training forward (a level's codebook is then moved only by its own level's probabilities).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if residual_grad not in ("exact", "straight_through"):
            raise ValueError(f"residual_grad must be exact or straight_through, got {residual_grad!r}")
        r = z
        probs, codes = [], []
        for level in range(self.levels):
            book = self.codebooks[level]
            d2 = (r.unsqueeze(1) - book.unsqueeze(0)).pow(2).sum(-1)  # [N, K], differentiable
            c, _ = nearest(r.detach(), book.detach())
            probs.append(torch.softmax(-d2 / temperature, dim=-1))
            codes.append(c)
            if level < self.levels - 1:
                e = book[c]
                r = r - (e.detach() if residual_grad == "straight_through" else e)
        return torch.stack(probs, 1), torch.stack(codes, 1)

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """Level by level: k-means on that level's residuals, so every code starts where data is."""
        r = z.detach()
        for level in range(self.levels):
            res = kmeans(r, self.codebook_size, iters, generator)
            self.codebooks[level].copy_(res.centroids)
            counts = res.counts.to(r.dtype).clamp_min(1.0)
            self.ema_count[level].copy_(counts)
            self.ema_sum[level].copy_(res.centroids * counts.unsqueeze(1))
            r = r - res.centroids[res.assignments]
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, residuals: list[torch.Tensor], codes: torch.Tensor) -> None:
        """codebook = EMA(sum of assigned residuals) / Laplace-smoothed EMA(cluster size)."""
        k = self.codebook_size
        for level in range(self.levels):
            r, c = residuals[level], codes[:, level]
            n = torch.bincount(c, minlength=k).to(r.dtype)
            s = torch.zeros(k, self.dim, dtype=r.dtype, device=r.device).index_add_(0, c, r)
            self.ema_count[level].mul_(self.decay).add_(n, alpha=1 - self.decay)
            self.ema_sum[level].mul_(self.decay).add_(s, alpha=1 - self.decay)
            total = self.ema_count[level].sum()
            smoothed = (self.ema_count[level] + _EPS) / (total + k * _EPS) * total
            self.codebooks[level].copy_(self.ema_sum[level] / smoothed.unsqueeze(1))

    @torch.no_grad()
    def reseed(self, level: int, dead: torch.Tensor, vectors: torch.Tensor) -> None:
        """Move the ``dead`` codes of ``level`` onto ``vectors`` (live residuals of that level)."""
        self.codebooks[level, dead] = vectors
        self.ema_count[level, dead] = 1.0
        self.ema_sum[level, dead] = vectors


@dataclass
class RQVAEOutput:
    x_hat: torch.Tensor
    codes: torch.Tensor
    residuals: list[torch.Tensor]
    recon_loss: torch.Tensor
    quant_loss: torch.Tensor
    loss: torch.Tensor


class RQVAE(nn.Module):
    """Encoder, residual quantiser and mirrored decoder; ``forward`` returns the SPEC loss."""

    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        dims = [cfg.input_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = mlp(dims, cfg.dropout)
        self.quantizer = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.latent_dim, cfg.beta, cfg.codebook_update, cfg.ema_decay)
        self.decoder = mlp(dims[::-1], cfg.dropout)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        if self.decoder is None:
            raise GenrecError(
                "this RQ-VAE has no decoder (a kept tokenizer written before kept files stored it): its loss (reconstruction + codebook + commitment) "
                "is unavailable; retrain the tokenizer to get one"
            )
        z = self.encoder(x)
        q = self.quantizer(z)
        x_hat = self.decoder(z + (q.z_hat - z).detach())
        recon = (x - x_hat).pow(2).sum(-1).mean()
        quant = q.codebook_loss + self.quantizer.beta * q.commitment_loss
        return RQVAEOutput(x_hat, q.codes, q.residuals, recon, quant, recon + quant)


class RQVAETokenizer(SemanticTokenizer):
    """A trained RQ-VAE's encoder + codebooks (+ decoder), used here only to assign codes (eval
    mode, no grad, batched; deterministic because assignment is an argmin with ties to the lowest
    index).

    The decoder is kept (issue 11) so that a runtime tokenizer (``runtime.RuntimeItemTokenizer``)
    can go on training the whole RQ-VAE with its own loss (reconstruction + codebook +
    commitment) next to a recommender (BLOGER, SPEC 8). Kept files written before that have no
    decoder: they still load (``decoder`` is None) and assign the same codes; only the tokenizer
    loss is unavailable for them.
    """

    def __init__(
        self, cfg: RQVAEConfig, encoder: nn.Module, quantizer: ResidualQuantizer, device: str = "cpu", batch_size: int = 8192, decoder: nn.Module | None = None
    ):
        self.cfg = cfg
        self.levels = cfg.levels
        self.codebook_size = cfg.codebook_size
        self.encoder = encoder.to(device).eval()
        self.quantizer = quantizer.to(device).eval()
        self.decoder = decoder.to(device).eval() if decoder is not None else None
        self.device = device
        self.batch_size = batch_size

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    @classmethod
    def from_model(cls, model: RQVAE, device: str | None = None) -> RQVAETokenizer:
        """Snapshot of ``model`` (deep copies, so further training does not change it)."""
        import copy

        dev = device or str(next(model.parameters()).device)
        return cls(model.cfg, copy.deepcopy(model.encoder), copy.deepcopy(model.quantizer), dev, decoder=copy.deepcopy(model.decoder))

    def state(self) -> dict[str, Any]:
        """What a kept-tokenizer file stores: config + encoder/quantizer/decoder weights (the
        decoder only when this tokenizer has one, i.e. not when loaded from an old file)."""
        out = {
            "kind": "rqvae",
            "config": self.cfg.to_dict(),
            "encoder": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "quantizer": {k: v.detach().cpu() for k, v in self.quantizer.state_dict().items()},
        }
        if self.decoder is not None:
            out["decoder"] = {k: v.detach().cpu() for k, v in self.decoder.state_dict().items()}
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str = "cpu") -> RQVAETokenizer:
        """Rebuild from ``state()``; a state without ``decoder`` (older kept files) gives a
        tokenizer with ``decoder = None``."""
        cfg = RQVAEConfig.from_dict(state["config"])
        model = RQVAE(cfg)
        model.encoder.load_state_dict(state["encoder"])
        model.quantizer.load_state_dict(state["quantizer"])
        decoder = None
        if state.get("decoder") is not None:
            model.decoder.load_state_dict(state["decoder"])
            decoder = model.decoder
        return cls(cfg, model.encoder, model.quantizer, device, decoder=decoder)

    def to_model(self) -> RQVAE:
        """A trainable ``RQVAE`` holding copies of this tokenizer's weights (in train mode);
        without a decoder its ``decoder`` is None (``RQVAE.forward`` then raises)."""
        import copy

        model = RQVAE(self.cfg)
        model.encoder = copy.deepcopy(self.encoder).cpu()
        model.quantizer = copy.deepcopy(self.quantizer).cpu()
        model.decoder = copy.deepcopy(self.decoder).cpu() if self.decoder is not None else None
        return model.train()

    def trainable_module(self) -> RQVAE:
        """The runtime tokenizer trains the whole RQ-VAE (``to_model``)."""
        return self.to_model()

    @torch.no_grad()
    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        x_all = np.require(vectors, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        if x_all.ndim != 2 or x_all.shape[1] != self.cfg.input_dim:
            raise ValueError(f"expected vectors of shape [N, {self.cfg.input_dim}], got {x_all.shape}")
        codes, last = [], []
        for s in range(0, x_all.shape[0], self.batch_size):
            x = torch.from_numpy(x_all[s : s + self.batch_size]).to(self.device)
            c, r = self.quantizer.assign(self.encoder(x))
            codes.append(c.cpu())
            last.append(r.float().cpu())
        d = self.cfg.latent_dim
        return QuantizeResult(
            codes=torch.cat(codes).numpy().astype(np.int64) if codes else np.zeros((0, self.levels), np.int64),
            last_residual=torch.cat(last).numpy() if last else np.zeros((0, d), np.float32),
            last_codebook=self.quantizer.codebooks[-1].detach().float().cpu().numpy().copy(),
        )
