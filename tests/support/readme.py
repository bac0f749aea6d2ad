"""The README's examples, for the tests that run them as written."""

from deploy import ROOT


def section(title: str) -> str:
    """The text of the README's `## title` section, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(title: str, language: str) -> list[str]:
    """The ```language code blocks of the README's `## title` section, in order."""
    return [block.split("\n```", 1)[0]
            for block in section(title).split(f"```{language}\n")[1:]]
