"""Prompt class names: the official code's ImageNet list, readable names for the other datasets."""

import re

import pytest

from realfake.classlists import imagenet_1k_wnids, imagenet_classnames, read_classlist

# The official code (Training-Data-Synthesis data/new_load_data.py imagenet_classes) is open_clip's
# list with these entries edited.
OFFICIAL_EDITS = {421: "baluster handrail", 478: "cardboard box carton", 692: "product packet packaging",
                  744: "projectile missile", 789: "shoji screen room divider", 836: "sunglass",
                  842: "swim trunks shorts"}


def official_names() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES)
    for i, name in OFFICIAL_EDITS.items():
        names[i] = name
    return names


@pytest.mark.parametrize("subset", ["imagenet10", "imagenet100", None])
def test_imagenet_prompt_names_are_the_official_list(subset):
    wnids_1k = imagenet_1k_wnids()
    official = dict(zip(wnids_1k, official_names()))
    wnids = read_classlist(subset) if subset else wnids_1k
    names = imagenet_classnames(wnids)
    assert names == {w: official[w] for w in wnids}
    assert len(set(names.values())) == len(wnids)  # no name repeats ('crane' was the bird and the machine)


def test_official_edits_and_known_names():
    names = imagenet_classnames(imagenet_1k_wnids())
    values = list(names.values())
    assert "crane bird" in values and "construction crane" in values and "crane" not in values
    assert values[744] == "projectile missile" and values[657] == "missile"
    assert values[836] == "sunglass" and values[837] == "sunglasses"
    assert names["n02102040"] == "English Springer Spaniel"  # WordNet's first lemma is 'English springer'


def test_a_wnid_outside_imagenet_1k_gets_its_wordnet_lemma():
    assert imagenet_classnames(["n00000000"]) == {"n00000000": "n00000000"}


def test_fine_grained_prompt_names_are_readable(tmp_path):
    """No underscores, index numbers or CamelCase in the names the prompts use."""
    from PIL import Image

    from realfake.datasets import cub, eurosat

    for cls in ("AnnualCrop", "HerbaceousVegetation", "SeaLake"):
        (tmp_path / "eurosat" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "eurosat" / cls / f"{cls}_1.jpg")
    names = set(eurosat(tmp_path / "eurosat").class_name)
    assert names == {"Annual Crop", "Herbaceous Vegetation", "Sea Lake"}
    root = tmp_path / "cub"
    (root / "images" / "001.Black_footed_Albatross").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images" / "001.Black_footed_Albatross" / "a.jpg")
    for name, text in {"images.txt": "1 001.Black_footed_Albatross/a.jpg", "image_class_labels.txt": "1 1",
                       "train_test_split.txt": "1 1", "classes.txt": "1 001.Black_footed_Albatross"}.items():
        (root / name).write_text(text + "\n")
    for name in set(cub(root).class_name) | names:
        assert not re.search(r"_|\d|[a-z][A-Z]", name), name
