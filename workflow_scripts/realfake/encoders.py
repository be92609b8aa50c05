"""Image encoders over files, batched through DataLoader workers: BLIP-2 captions (the caption
stage) and open_clip image embeddings with their per-class means (the embed stage). The stages are
thin CLIs over them; the full-size rehearsal drives the same functions.
"""

from __future__ import annotations

import torch

from .chunks import image_batches
from .models import check_local


def load_blip2(path: str, device: str = "cpu", dtype=torch.float32):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    check_local(path, "BLIP-2 folder", "models.blip2")
    processor = Blip2Processor.from_pretrained(path, local_files_only=True)
    model = Blip2ForConditionalGeneration.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    return processor, model.to(device).eval()


@torch.no_grad()
def caption_paths(processor, model, paths, batch_size: int, max_new_tokens: int, workers: int = 0) -> list[str]:
    """Greedy captions of image files, decoded ``batch_size`` at a time by ``workers`` processes."""
    out = []
    for images in image_batches(paths, batch_size, workers):
        inputs = processor(images=images, return_tensors="pt").to(model.device, model.dtype)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out


@torch.no_grad()
def embed_paths(model, preprocess, paths, batch_size: int = 64, device: str = "cpu", workers: int = 0) -> torch.Tensor:
    """Image embeddings (float32, on the CPU) of image files decoded and preprocessed by ``workers``."""
    out = [model.encode_image(x.to(device)).float().cpu() for x in image_batches(paths, batch_size, workers, preprocess)]
    return torch.cat(out) if out else torch.empty(0)


def class_means(emb: torch.Tensor, labels) -> dict[int, torch.Tensor]:
    labels = torch.as_tensor(list(labels))
    return {int(c): emb[labels == c].mean(0) for c in torch.unique(labels)}
