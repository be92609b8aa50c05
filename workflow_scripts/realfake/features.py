"""Feature extractors of the quality stage and its filter, and chunked feature extraction.

- ``inception``: torchvision Inception-v3 pool features (2048-d) from a local weights file
  (``quality.inception``). These are torchvision's ImageNet weights, not the TF-ported FID
  Inception, so absolute values are not comparable with published FIDs; differences between our
  variants are.
- ``clip``: the open_clip image encoder of the visual guidance (``models.clip``; the mini world's
  random tiny ViT).
- ``real_classifier``: penultimate features of the workflow's own classifier trained on real data.
  The mini world's named substitute for Inception: an in-domain trained network, as Inception is
  for ImageNet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .classifier_models import load_classifier, penultimate
from .data import frame_image_chunks, read_table
from .images import fit_rgb, to_tensor
from .models import check_local, create_open_clip
from .settings import Quality


class Extractor:
    """PIL images -> float32 feature rows, batched, no gradients."""

    name = "?"

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare(self, images) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    @torch.no_grad()
    def batched(self, images, fn) -> torch.Tensor:
        """``fn`` (a network) over ``prepare``d batches of the images, as one float CPU tensor."""
        out = [fn(self.prepare(images[i : i + self.batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros((0, 0))

    def __call__(self, images) -> np.ndarray:
        return self.batched(images, self.forward).numpy()


class ClassifierFeatures(Extractor):
    """Penultimate features (and softmax scores) of a classifier written by the classify stage."""

    def __init__(self, model_file: str, size: int, batch_size: int = 64):
        super().__init__(batch_size)
        self.model = load_classifier(model_file).to(self.device)
        self.size = size
        self.name = f"real_classifier ({self.model.__class__.__name__} trained on real data: {model_file})"

    def prepare(self, images):
        return to_tensor([fit_rgb(im, self.size) for im in images])

    def forward(self, x):
        return penultimate(self.model, x)

    def confidence(self, images, labels) -> np.ndarray:
        """Softmax probability of each image's intended class."""
        p = self.batched(images, self.model).softmax(1)
        return p[torch.arange(len(p)), torch.as_tensor(np.asarray(labels), dtype=torch.long)].numpy()


class InceptionFeatures(Extractor):
    """torchvision Inception-v3 2048-d pool features from a local state-dict file."""

    def __init__(self, weights: str, batch_size: int = 64):
        from torchvision.models import inception_v3

        super().__init__(batch_size)
        check_local(weights, "Inception-v3 weights file", "quality.inception or models.inception")
        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        what = f"{weights} is not a torchvision Inception-v3 state dict (config key quality.inception or models.inception)"
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            missing, _ = model.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError, AttributeError, OSError) as exc:
            raise ValueError(f"{what}: {str(exc).splitlines()[-1].strip()}") from exc
        if missing:
            raise ValueError(f"{what}: {len(missing)} missing keys, e.g. {missing[0]}")
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(self.device)
        self.name = f"inception (torchvision Inception-v3 pool, {weights})"

    def prepare(self, images):
        x = (to_tensor([fit_rgb(im, 299) for im in images]) + 1) / 2
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        return (x - mean) / std

    def forward(self, x):
        return self.model(x)


class ClipFeatures(Extractor):
    """open_clip image embeddings (L2-normalised), and CLIP scores against class-name prompts."""

    def __init__(self, model_name: str, checkpoint: str, batch_size: int = 64):
        super().__init__(batch_size)
        self.model, self.preprocess = create_open_clip(model_name, checkpoint)
        self.model = self.model.to(self.device)
        self.model_name = model_name
        self.name = f"clip (open_clip {model_name}, {checkpoint})"

    def prepare(self, images):
        return torch.stack([self.preprocess(im) for im in images])

    def forward(self, x):
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def clip_score(self, images, class_names) -> np.ndarray:
        import open_clip

        names = list(class_names)
        prompts = sorted(set(names))
        tok = open_clip.get_tokenizer(self.model_name)
        text = torch.nn.functional.normalize(self.model.encode_text(tok([f"a photo of a {n}." for n in prompts])
                                                                    .to(self.device)).float(), dim=-1).cpu()
        img = torch.as_tensor(self(images))
        rows = torch.as_tensor([prompts.index(n) for n in names])
        return (img * text[rows]).sum(1).numpy()


def extractor(q: Quality, encoder_name: str, classifier_size: int, classifier: str | None,
              encoder: str | None, inception: str | None = None) -> Extractor:
    """The feature space of ``quality.features``; ``classifier_size`` is the real classifier's input
    size; ``inception`` the Inception-v3 weights (default ``quality.inception``)."""
    if q.features == "inception":
        weights = inception or q.inception
        if not weights:
            raise ValueError("quality.features is inception but no weights are given: set models.inception (a "
                             "{url, sha256} pin or a local file) or quality.inception (a local file)")
        return InceptionFeatures(weights, q.batch_size)
    if q.features == "clip":
        return ClipFeatures(encoder_name, encoder, q.batch_size)
    return ClassifierFeatures(classifier, classifier_size, q.batch_size)


# ----------------------------------------------------------------------------- frames
def real_train(index_file: str, max_per_class: int | None, seed: int) -> pd.DataFrame:
    index = read_table(index_file, "index")
    train = index[index.split == "train"].sort_values("image_id").reset_index(drop=True)
    return cap_per_class(train, max_per_class, seed)


def cap_per_class(frame: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """A seeded per-class sample of at most ``max_per_class`` rows (all rows when null)."""
    if max_per_class is None:
        return frame
    rng = np.random.default_rng(seed)
    keep = [idx if len(idx) <= max_per_class else np.sort(rng.choice(idx, max_per_class, replace=False))
            for _, idx in sorted(frame.groupby("label").indices.items())]
    return frame.iloc[np.concatenate(keep)].reset_index(drop=True)


def chunked(fn, frame: pd.DataFrame, chunk: int = 1024, desc: str = "features") -> np.ndarray:
    """``fn(images, rows)`` over the frame's rows, decoding ``chunk`` images at a time and reading
    every shard once (a 10x IN-1K set never sits in memory); results in the frame's row order."""
    out = None
    bar = tqdm(total=len(frame), desc=desc, mininterval=10)
    for pos, images in frame_image_chunks(frame, chunk=chunk):
        part = np.asarray(fn(images, frame.iloc[pos]))
        if out is None:
            out = np.empty((len(frame), *part.shape[1:]), part.dtype)
        out[pos] = part
        bar.update(len(pos))
    bar.close()
    return out if out is not None else np.zeros((0, 0), np.float32)


def features_of(ext: Extractor, frame: pd.DataFrame) -> np.ndarray:
    return chunked(lambda images, rows: ext(images), frame)


