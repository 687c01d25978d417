"""The README stays true: short, a quick start of exactly `make run` and `make test`, every
`bdi …` command and option it shows real, its settings and `.log` codes those of the code, a
host key check in every OpenSSH command; docs/architecture.md names only what exists."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bdi.cli import app
from bdi.config import Settings
from bdi.routing.errors import Code
from bdi.routing.layout import default_layout

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MAX_LINES = 300
WORD = re.compile(r"[a-z][a-z-]*")
# after `|` in a command line, these are a shell pipe, not an alternative sub-command
SHELL_WORDS = {"awk", "bash", "cut", "grep", "head", "jq", "less", "python3", "sh", "sort", "tail"}
SCOPES = {"file": "upload", "structure": "structure", "section": "section"}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)


def prose(text: str) -> str:
    return re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)


def section(text: str, title: str) -> str:
    """The text under `## title`, up to the next `## ` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


def logical_lines(block: str) -> list[str]:
    """A code block's lines, with `\\`-continued lines joined."""
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]


def command_lines(text: str) -> list[str]:
    """Every line of a code block, and every inline code span (prose or code comments)."""
    lines = [line for block in code_blocks(text) for line in logical_lines(block)]
    spans = re.findall(r"`([^`\n]+)`", prose(text) + "\n".join(lines))
    return lines + spans


def bdi_commands(text: str) -> list[str]:
    """What follows `bdi` wherever a `bdi` command is typed, its comment dropped."""
    found = []
    for line in command_lines(text):
        for part in re.split(r"&&|;", line):
            words = part.split(" #", 1)[0].split()
            if words and (words[0] == "bdi" or words[0].endswith("/bin/bdi")):
                found.append(" ".join(words[1:]))
    return found


def subcommands(command: object) -> dict[str, object]:
    """A group's sub-commands by name (none for a command): typer's own click or another."""
    found = getattr(command, "commands", None)
    return found if isinstance(found, dict) else {}


def resolve(words: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """The command path the words name, the other paths given as `| alternative`, and the
    options written; fails on a sub-command that does not exist."""
    command: object = typer.main.get_command(app)
    path: list[str] = []
    siblings: dict[str, object] = {}
    rest = list(words)
    while subcommands(command) and rest and WORD.fullmatch(rest[0]):
        name = rest.pop(0)
        assert name in subcommands(command), f"`bdi {' '.join([*path, name])}`: no such command"
        siblings, command, path = subcommands(command), subcommands(command)[name], [*path, name]
    alternatives = []
    for word, after in itertools.pairwise(rest):
        if word == "|" and WORD.fullmatch(after) and after not in SHELL_WORDS and path:
            assert after in siblings, f"`bdi {' '.join([*path[:-1], after])}`: no such command"
            alternatives.append([*path[:-1], after])
    return path, alternatives, re.findall(r"--[a-z][a-z-]*", " ".join(rest))


def help_text(path: list[str]) -> str:
    result = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}).invoke(
        app, [*path, "--help"]
    )
    assert result.exit_code == 0, f"`bdi {' '.join(path)} --help`: {result.output}"
    return result.output


def test_the_readme_is_short() -> None:
    assert len(readme().splitlines()) < MAX_LINES


def test_the_quick_start_is_make_run_then_make_test() -> None:
    blocks = code_blocks(section(readme(), "Quick start"))
    commands = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"no `{target}` in the Makefile"


COMMANDS = bdi_commands(readme())


def test_the_readme_shows_the_commands() -> None:
    named = {" ".join(resolve(c.split())[0][:2]) for c in COMMANDS}
    assert {"init", "serve", "demo", "check", "kit send", "admin participant"} <= named


@pytest.mark.parametrize("words", COMMANDS)
def test_every_bdi_command_in_the_readme_exists(words: str) -> None:
    path, alternatives, options = resolve(words.split())
    for other in alternatives:
        help_text(other)
    shown = help_text(path)
    for option in options:
        assert re.search(rf"(?<![\w-]){option}(?![\w-])", shown), f"`bdi {words}`: {option}?"


def test_every_openssh_command_checks_the_host_key() -> None:
    text = readme() + (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    blocks = [line for block in code_blocks(text) for line in logical_lines(block)]
    spans = [s for s in re.findall(r"`([^`\n]+)`", prose(text)) if "@" in s]  # with a host
    runs = [line for line in blocks + spans if re.search(r"\bs(ftp|sh)\s+-", line)]
    assert runs, "no OpenSSH recipe in README.md or docs/clients.md"
    for line in runs:
        assert "StrictHostKeyChecking=" in line or "UserKnownHostsFile=" in line, line


def test_the_settings_table_names_real_settings() -> None:
    rows = [r for r in section(readme(), "Running the hub").splitlines() if r.startswith("| `")]
    assert rows
    for row in rows:
        cells = row.split("|")
        names = re.findall(r"`(\w+)`", cells[1])
        assert set(names) <= set(Settings.model_fields), row
        assert re.findall(r"`(BDI_\w+)`", cells[3]) == [f"BDI_{n.upper()}" for n in names], row


def test_the_code_table_is_layout_toml() -> None:
    layout = default_layout()
    text = section(readme(), "`.log` files and their codes")
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in text.splitlines() if r.startswith("|")]
    table = {r[0]: r for r in rows if r[0] in {c.value for c in Code}}
    assert list(table) == [c.value for c in (*layout.check_order, Code.INTERNE)]
    for code, (_, scope, message, _detail) in table.items():
        spec = layout.errors[Code(code)]
        assert (scope, message) == (SCOPES[spec.scope], spec.message), code


def test_the_readme_links_lead_somewhere() -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme()):
        assert (ROOT / target).exists(), target


def test_the_architecture_names_what_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_]+/[\w./-]*)`", text))
    assert not sorted(p for p in named if not (ROOT / p).exists())
    rooms = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert rooms, "no room found"
    assert not sorted(r for r in rooms if f"`{r}/`" not in text), "rooms missing from the page"
