"""The README tells the truth: its Python examples run, and its command table matches the command line.

The examples run as written on small sample data (``recon3d sample-data``'s files, made smaller), with
their budgets shrunk (``steps=`` and ``resolution=``) so they take seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from recon3d.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
#: Options every command has, which the table states once above itself instead of in every row.
COMMON = {"--threads", "--quiet", "-q", "--verbose", "--help"}

pytestmark = pytest.mark.usefixtures("one_thread")


def section(text: str, heading: str) -> str:
    """The README's text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    stop = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest if stop is None else rest[:stop.start()]


def command_rows() -> dict[str, str]:
    """``command → its row's usage cell`` from the README's command table."""
    rows = {}
    for line in section(README.read_text(encoding="utf-8"), "### Commands").splitlines():
        found = re.match(r"\| `recon3d ([a-z-]+)(.*?)` \|", line)
        if found:
            rows[found.group(1)] = found.group(2).replace("\\|", "|")
    return rows


def cli_options(command, secondary: bool = True) -> set[str]:
    """The option names of a click command (with their ``--no-…`` forms when ``secondary``)."""
    names: set[str] = set()
    for param in command.params:
        if param.param_type_name == "option":
            names.update(param.opts)
            if secondary:
                names.update(param.secondary_opts)
    return names


def test_the_command_table_matches_the_command_line():
    group = typer.main.get_command(app)
    rows = command_rows()
    assert sorted(rows) == sorted(group.commands), "README's command table and `recon3d --help` list other commands"
    for name, usage in rows.items():
        options = cli_options(group.commands[name])
        primary = cli_options(group.commands[name], secondary=False)
        mentioned = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", usage))
        unknown = mentioned - options
        assert not unknown, f"README's {name} row names options the command lacks: {sorted(unknown)}"
        missing = {option for option in primary - COMMON
                   if option.startswith("--") and option not in mentioned
                   and not ({"--output", "-o"} & {option} and "-o" in mentioned)
                   and not (option == "--resolution" and "-r" in mentioned)}
        assert not missing, f"README's {name} row leaves out {sorted(missing)}"


def test_the_root_help_lists_every_command_with_one_line(monkeypatch):
    from test_cli import run

    monkeypatch.setenv("COLUMNS", "200")
    text = run("--help").stdout
    for name in typer.main.get_command(app).commands:
        assert re.search(rf"│ {re.escape(name)} +[A-Z]\S.*│$", text, re.MULTILINE), name


def python_examples() -> list[str]:
    """The ```python blocks of the README's Python API section."""
    text = section(README.read_text(encoding="utf-8"), "## Python API")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def shrunk(code: str) -> str:
    """An example with seconds-sized budgets: 5 steps (30 for an occupancy field, which needs them to have a
    surface at all), resolution 24."""
    lines = [re.sub(r"steps=\d+", "steps=30" if "fit_occupancy" in line else "steps=5", line)
             for line in code.splitlines()]
    return re.sub(r"resolution=\d+", "resolution=24", "\n".join(lines))


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory) -> Path:
    from recon3d.samples import write_samples

    folder = tmp_path_factory.mktemp("readme")
    write_samples(folder / "data", points=3000, views=(3, 1), size=16, resolution=24, show_progress=False)
    return folder


def test_the_python_examples_run(sample_folder, monkeypatch, capsys):
    examples = python_examples()
    assert len(examples) >= 2 and all("import recon3d" in code for code in examples)
    monkeypatch.chdir(sample_folder)
    for code in examples:
        exec(compile(shrunk(code), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's own code
    printed = capsys.readouterr().out
    assert "Model(kind='sdf'" in printed and (sample_folder / "scan.obj").is_file()
    assert (sample_folder / "scan.sdf.pt").is_file()
