"""The paper's method core: min-SNR diffusion loss, distribution matching (MMD with a linear
kernel), and the visual-guidance token. Pure tensor functions, unit-tested by hand.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import read_torch


LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # UNet attention projections the LoRA adapts (Tab. 7)

def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    ac = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac)


def min_snr_weights(snr_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights for epsilon prediction: min(snr, gamma) / snr."""
    return torch.clamp(snr_values, max=gamma) / snr_values


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_b(w_b * mse_b) with mse_b the mean over C, H, W of sample b."""
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (weights * per_sample).mean()


def distribution_matching_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear-kernel MMD: MSE between the w-weighted batch sums of prediction and target."""
    w = weights.view(-1, *([1] * (pred.dim() - 1))).float()
    return F.mse_loss((w * pred.float()).sum(0), (w * target.float()).sum(0))


def grouped_dm_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, group: int | None) -> torch.Tensor:
    """Distribution matching over consecutive groups of ``group`` rows, averaged over the groups
    (``None``: the whole batch is one group). The official script sums over each GPU's batch of 8
    and data parallelism averages the GPUs' losses: groups of 8 are that loss, whatever the GPUs."""
    if group is None or group >= len(pred):
        return distribution_matching_loss(pred, target, weights)
    if len(pred) % group:
        raise ValueError(f"a batch of {len(pred)} rows does not split into distribution-matching groups of {group}")
    parts = [distribution_matching_loss(p, t, w) for p, t, w in
             zip(pred.split(group), target.split(group), weights.split(group))]
    return torch.stack(parts).mean()


def realfake_loss(pred, target, alphas_cumprod, timesteps, gamma: float, dm_weight: float, dm_group: int | None = None):
    """Total fine-tuning loss = min-SNR loss + dm_weight * distribution matching (over groups of
    ``dm_group`` rows, ``grouped_dm_loss``); returns the parts too."""
    w = min_snr_weights(snr(alphas_cumprod, timesteps), gamma)
    base = weighted_mse(pred, target, w)
    dm = grouped_dm_loss(pred, target, w, dm_group) if dm_weight > 0 else pred.new_zeros(())
    return base + dm_weight * dm, base.detach(), dm.detach()


def inject_guidance(hidden: torch.Tensor, embeddings: torch.Tensor | None, rescale: bool = False) -> torch.Tensor:
    """Replace the last token position of text hidden states (B, L, D) by image embeddings (B, D).

    With ``rescale`` each embedding is scaled to the norm of the token it replaces, so an
    encoder whose output scale differs from the text encoder's does not swamp cross-attention.
    Returns a new tensor; all positions but the last are unchanged.
    """
    if embeddings is None:
        return hidden
    if embeddings.shape[-1] != hidden.shape[-1]:
        raise ValueError(
            f"guidance embedding width {embeddings.shape[-1]} != text hidden width {hidden.shape[-1]}: "
            "the image encoder must match the text encoder (CLIP ViT-L/14 for SD 1.5)"
        )
    emb = embeddings.to(hidden.dtype).expand(hidden.shape[0], -1)
    if rescale:
        last_norm = hidden[:, -1].norm(dim=-1, keepdim=True)
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8) * last_norm
    out = hidden.clone()
    out[:, -1] = emb
    return out


def build_prompt(template: str, classname: str, caption: str | None) -> str:
    """Fill the prompt template; without a caption the ``{caption}`` slot and its comma go."""
    if not caption:
        template = template.replace(", {caption}", "").replace("{caption}, ", "").replace("{caption}", "")
    return template.format(classname=classname, caption=caption or "").strip()


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts: list[str], device=None) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device or text_encoder.device))[0]


class Guidance:
    """Guidance embeddings of training rows, looked up on demand: a table (class means, C x D, or
    the embeddings file, N x D) and each row's position in it. Indexing gives what stacking one
    embedding per row would, without an N x D copy (3.9 GB of class means at IN-1K)."""

    def __init__(self, table: torch.Tensor, rows):
        self.table, self.rows = table, torch.as_tensor(np.asarray(rows), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> torch.Tensor:
        return self.table[self.rows[torch.as_tensor(idx, dtype=torch.long)]]


def guidance_table(mode: str, labels, image_ids, means_file, emb_file) -> Guidance | None:
    """The guidance embedding of each training row (class mean or own embedding), or None."""
    if mode == "none":
        return None
    if mode == "class_mean":
        means = read_torch(means_file, "class means")["means"]  # {class: mean embedding}
        classes = sorted(means)
        pos = {c: k for k, c in enumerate(classes)}
        return Guidance(torch.stack([means[c] for c in classes]), [pos[int(c)] for c in labels])
    data = read_torch(emb_file, "embeddings")
    pos = {iid: i for i, iid in enumerate(data["image_id"])}
    return Guidance(data["embedding"], [pos[i] for i in image_ids])
