"""The README's examples run as written and print what the README shows.

A runnable example is a ```python block that starts with ``import``; the others are
fragments continuing an example. A ```text block right after a ``<!-- output -->`` line is
(part of) what the runnable example above it prints: its lines must appear in the output in
order; a line ``...`` skips any number of lines, and ``...`` inside a line matches any text.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tensorsmith import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"(<!-- output -->\n)?```(\w*)\n(.*?)```", re.S)


def _examples() -> list[tuple[str, list[str]]]:
    """(code, [expected outputs]) of each runnable example, in README order."""
    out: list[tuple[str, list[str]]] = []
    for m in FENCE.finditer(README):
        marked, lang, body = m.group(1), m.group(2), m.group(3)
        if lang == "python" and body.startswith("import "):
            out.append((body, []))
        elif marked and lang == "text":
            assert out, "an <!-- output --> block comes before any runnable example"
            out[-1][1].append(body)
    return out


EXAMPLES = _examples()


def _line_pattern(line: str) -> re.Pattern:
    return re.compile(".*?".join(re.escape(part) for part in line.split("...")) + r"\Z")


def assert_prints(output: str, expected: str) -> None:
    """Every expected line appears in ``output`` in order (``...`` as described above)."""
    lines = output.splitlines()
    at = 0
    skipping = False
    for want in expected.rstrip("\n").splitlines():
        if want.strip() == "...":
            skipping = True
            continue
        pat = _line_pattern(want.rstrip())
        if skipping:
            found = next((i for i in range(at, len(lines)) if pat.match(lines[i].rstrip())), None)
        else:
            found = at if at < len(lines) and pat.match(lines[at].rstrip()) else None
            if found is None and at == 0:  # the first expected line may come after other output
                found = next((i for i in range(len(lines)) if pat.match(lines[i].rstrip())), None)
        assert found is not None, (f"the README shows {want!r}, the example printed (from line "
                                   f"{at + 1}):\n" + "\n".join(lines[at:at + 40]))
        at, skipping = found + 1, False


def test_the_readme_has_runnable_examples_with_their_output():
    assert len(EXAMPLES) >= 3
    assert sum(bool(expected) for _, expected in EXAMPLES) >= 3


@pytest.mark.parametrize("code, expected", EXAMPLES, ids=[f"block{i}" for i in range(len(EXAMPLES))])
def test_readme_example_prints_what_the_readme_shows(code, expected, tmp_path):
    script = tmp_path / "readme.py"  # the name the README's source locations show
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for block in expected:
        assert_prints(r.stdout, block)


def test_assert_prints_matches_as_documented():
    out = "a\nb 1.5 ms\nc\nd\n"
    assert_prints(out, "a\nb ... ms\n...\nd\n")
    assert_prints(out, "c\nd\n")
    with pytest.raises(AssertionError):
        assert_prints(out, "a\nc\n")  # c does not follow a directly
    with pytest.raises(AssertionError):
        assert_prints(out, "b 2.5 ms\n")


def test_the_command_line_synopsis_lists_every_option():
    section = README[README.index("## Command line"):]
    synopsis = re.search(r"```\n(.*?)```", section, re.S).group(1)
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert f"tensorsmith {name}" in synopsis, name
        for action in command._actions:
            if action.help == "==SUPPRESS==" or not action.option_strings or action.dest == "help":
                continue
            assert any(o in synopsis for o in action.option_strings), (name, action.option_strings)
