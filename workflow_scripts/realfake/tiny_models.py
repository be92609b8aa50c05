"""Tiny randomly initialised models of the paper's classes, saved in the real checkpoints' layouts."""

from __future__ import annotations

from pathlib import Path

import torch

from .tiny_sd import build_tokenizer


def build_tiny_blip2(out: Path, seed: int = 0, num_query_tokens: int = 4) -> Path:
    """A Blip2ForConditionalGeneration (ViT + Q-Former + OPT, as blip2-opt-2.7b) and its Blip2Processor
    at toy width, saved with save_pretrained like the hub folder. The tokenizer is the real CLIP BPE
    (built offline) plus the ``<image>`` token that BLIP-2 checkpoints of transformers >= 4.47 carry."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig)

    tok = build_tokenizer(out.parent / f"{out.name}_tok")
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.image_token = "<image>"
    image_token = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=2, encoder_hidden_size=32, vocab_size=100).to_dict(),
        text_config=OPTConfig(vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                              num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id).to_dict(),
        num_query_tokens=num_query_tokens, image_token_index=image_token)
    Blip2ForConditionalGeneration(cfg).save_pretrained(out)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok,
                   num_query_tokens=num_query_tokens).save_pretrained(out)
    return out
