"""The README's tables stay equal to the code."""

import argparse
import re
from pathlib import Path
from typing import Literal, get_args, get_origin

from groupbuy_async.cli import build_parser
from groupbuy_async.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_and_nothing_else() -> None:
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def _cli_table() -> dict[str, str]:
    """The Deploying section's command table: verb -> the command as README shows it."""
    section = README.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    return {command.split()[1]: command for command in commands}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The options `--help` shows (not -h, not the suppressed internal ones)."""
    return {
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
    }


def test_the_readme_commands_are_the_ones_help_shows() -> None:
    parser = build_parser()
    assert parser.format_usage().startswith("usage: groupbuy-async "), parser.format_usage()
    table = _cli_table()
    assert all(command.startswith("groupbuy-async ") for command in table.values()), table
    (verb_action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    verbs: dict[str, argparse.ArgumentParser] = verb_action.choices
    assert set(table) == set(verbs)
    for verb, sub in verbs.items():
        assert sub.format_usage().startswith(f"usage: groupbuy-async {verb}"), verb
        assert set(re.findall(r"--[a-z-]+", table[verb])) == _options(sub), verb


def test_every_choice_of_a_setting_is_in_its_description_and_the_readme() -> None:
    """LOG_LEVEL, LOG_FORMAT, API_EVENT_LOOP: what is accepted is what `--help` and README say."""
    section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| [^|]* \| (.*) \|$", section, flags=re.M))
    for name, field in Settings.model_fields.items():
        if get_origin(field.annotation) is not Literal:
            continue
        for choice in get_args(field.annotation):
            assert choice in (field.description or ""), (name, choice)
            assert choice in rows[name.upper()], (name, choice)


def test_every_error_answers_the_status_the_readme_gives_its_code() -> None:
    from groupbuy_async import errors
    from groupbuy_async.http.envelope import http_status

    section = README.split("### Codes", 1)[1].split("\n## ", 1)[0]
    rows = {
        code: (int(status), meaning)
        for code, status, meaning in re.findall(r"^\| `(\w+)` \| (\d+) \| (.*) \|$", section, re.M)
    }
    for error in errors.ALL_ERRORS:
        status, meaning = rows[error.code]
        assert http_status(error) == status or f"{http_status(error)} for" in meaning, error


def test_the_layout_table_names_every_module() -> None:
    """Each module of the package in the Layout table: a package's modules in its row, a
    top-level one by its path."""
    import groupbuy_async

    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `groupbuy_async/(\w+)/` \| (.*) \|$", section, re.M))
    source = Path(groupbuy_async.__file__).parent
    missing = [
        str(path.relative_to(source))
        for path in sorted(source.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        if f"`{path.name}`" not in rows.get(path.parent.name, "")
        and not (path.parent == source and f"{path.name}`" in section)
    ]
    assert missing == [], "add them to README's Layout table"
