"""The README's tables stay equal to the code."""

import re
from pathlib import Path

from groupbuy_async.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_and_nothing_else() -> None:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())
