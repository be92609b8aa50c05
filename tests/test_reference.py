"""docs/config.md is the schema's reference, regenerated: a key added to the schema without
regenerating the page fails here."""

from conftest import REPO
from realfake.config import load_schema
from realfake.tools.reference import reference


def test_config_reference_is_up_to_date():
    page = (REPO / "docs" / "config.md").read_text()
    assert page == reference(), "docs/config.md is stale: run python -m realfake.tools.reference > docs/config.md"


def test_every_schema_key_is_in_the_reference():
    page = reference()
    schema = load_schema()
    for section, node in schema["properties"].items():
        assert f"## `{section}`" in page
        for key in node.get("properties", {}):
            assert f"`{section}.{key}`" in page, f"{section}.{key}"
    for key in ("finetune.gpus", "finetune.dm_group", "classify.gpus", "tables.table2_seeds",
                "datasets.<name>.finetune_overrides", "models.sd15"):
        assert f"`{key}`" in page, key
