"""The mini world's "web-pretrained" generator: a tiny latent diffusion model built from the
real diffusers/transformers classes of Stable Diffusion, pretrained on digits rendered from
matplotlib's fonts, and saved as a normal ``StableDiffusionPipeline`` folder so the
paper-scale code path (``load_pipeline``) loads it unchanged.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .atomic import atomic_dir
from .settings import Pretrain

log = logging.getLogger(__name__)
TEXT_HIDDEN = 64  # text width == cross-attention width == guidance-token width
MAX_TOKENS = 16


# ---------------------------------------------------------------- tokenizer (offline)
def write_clip_tokenizer_files(out_dir: Path) -> None:
    """Write vocab.json/merges.txt of the OpenAI CLIP BPE from open_clip's bundled vocabulary."""
    import open_clip.tokenizer as octok

    bpe_path = Path(octok.__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(octok.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def build_tokenizer(work_dir: Path, max_length: int = MAX_TOKENS):
    """A CLIPTokenizer with the real CLIP BPE, built offline (no hub)."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(work_dir)
    vocab = json.loads((work_dir / "vocab.json").read_text())
    merges = (work_dir / "merges.txt").read_text().splitlines()[1:]
    try:  # transformers >= 5: vocab dict and merges list
        tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>")
    except TypeError:  # transformers 4: file paths
        tok = CLIPTokenizer(str(work_dir / "vocab.json"), str(work_dir / "merges.txt"), pad_token="<|endoftext|>")
    tok.model_max_length = max_length
    return tok


# ---------------------------------------------------------------- model
def build_tiny_pipeline(tokenizer, seed: int, image_size: int = 32):
    """A StableDiffusionPipeline of the real classes at toy size (random init, seeded)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=image_size,
    )
    unet = UNet2DConditionModel(
        sample_size=image_size // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=4 * TEXT_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            projection_dim=TEXT_HIDDEN,
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        steps_offset=1, clip_sample=False,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# ---------------------------------------------------------------- "web" data
def font_files() -> list[Path]:
    """matplotlib's bundled TrueType fonts that draw all ten digits as distinct glyphs."""
    import matplotlib

    fonts = []
    for path in sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")):
        font = ImageFont.truetype(str(path), 24)
        glyphs = set()
        for d in "0123456789":
            im = Image.new("L", (32, 32))
            ImageDraw.Draw(im).text((16, 16), d, fill=255, font=font, anchor="mm")
            arr = np.asarray(im)
            if arr.sum() < 255 * 10:
                break
            glyphs.add(arr.tobytes())
        else:
            if len(glyphs) == 10:
                fonts.append(path)
    return fonts


def render_digit(digit: int, font_path: Path, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """White digit on black, random size/rotation/shift/stroke, like a web photo of a digit.

    Drawn at twice the size and downsampled; glyphs fill 55-90% of the frame height.
    """
    font = ImageFont.truetype(str(font_path), int(rng.integers(int(size * 1.5), int(size * 2.4))))
    big = Image.new("L", (size * 2, size * 2))
    stroke = int(rng.integers(0, 5))
    ImageDraw.Draw(big).text((size, size), str(digit), fill=255, font=font, anchor="mm",
                             stroke_width=stroke, stroke_fill=255)
    big = big.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR,
                     translate=(float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4))))
    return np.asarray(big.resize((size, size), Image.BILINEAR))


def font_digit_dataset(samples_per_font_digit: int, seed: int, size: int = 32):
    """(images uint8 N x size x size, captions list) for all fonts x digits x samples."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for font_path in font_files():
        fname = font_path.stem
        for digit in range(10):
            for _ in range(samples_per_font_digit):
                images.append(render_digit(digit, font_path, rng, size))
                captions.append(f"a photo of the digit {digit} in font {fname}")
    return np.stack(images), captions


# ---------------------------------------------------------------- pretraining
def _to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def pretrain_vae(vae, images: torch.Tensor, steps: int, batch_size: int, lr: float, gen: torch.Generator):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    vae.train()
    for _ in tqdm(range(steps), desc="pretrain vae", mininterval=10):
        x = images[torch.randint(len(images), (batch_size,), generator=gen)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
    scaling = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=scaling)
    log.info("vae final loss %.4f, latent scaling factor %.4f", float(loss), scaling)
    return lat * scaling


def pretrain_unet(pipe, latents: torch.Tensor, captions: list[str], steps: int, batch_size: int, lr: float,
                  gen: torch.Generator, uncond_prob: float = 0.1):
    """Plain DDPM epsilon training with 10% empty captions (so CFG works at sampling)."""
    ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    empty = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                           return_tensors="pt").input_ids
    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    pipe.unet.train()
    pipe.text_encoder.train()
    sched = pipe.scheduler
    for _ in tqdm(range(steps), desc="pretrain unet", mininterval=10):
        idx = torch.randint(len(latents), (batch_size,), generator=gen)
        tok = ids[idx].clone()
        drop = torch.rand(batch_size, generator=gen) < uncond_prob
        tok[drop] = empty
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        cond = pipe.text_encoder(tok)[0]
        loss = F.mse_loss(pipe.unet(xt, t, cond).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pipe.unet.eval()
    pipe.text_encoder.eval()
    log.info("unet final loss %.4f", float(loss))


def pretrain_base(out_dir: str | Path, p: Pretrain, image_size: int = 32) -> None:
    """Build, pretrain and save the tiny base model as a StableDiffusionPipeline folder (atomic)."""
    out_dir = Path(out_dir)
    seed = p.seed
    gen = torch.Generator().manual_seed(seed)
    images, captions = font_digit_dataset(p.samples_per_font_digit, seed, image_size)
    log.info("web pretraining set: %d renders from %d fonts", len(images), len(images) // (10 * p.samples_per_font_digit))
    with atomic_dir(out_dir) as tmp:
        tokenizer = build_tokenizer(tmp / "_tok")
        pipe = build_tiny_pipeline(tokenizer, seed, image_size)
        x = _to_tensor(images)
        latents = pretrain_vae(pipe.vae, x, p.vae_steps, p.batch_size, p.lr, gen)
        pretrain_unet(pipe, latents.detach(), captions, p.unet_steps, p.batch_size, p.lr, gen)
        pipe.save_pretrained(tmp)
        shutil.rmtree(tmp / "_tok")
