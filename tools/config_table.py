"""Print the configuration table for the docs, from the settings' declarations.

Usage: python -m tools.config_table   (paste its output over the docs' Configuration table)
"""

import sys

from server.config import SETTINGS
from server.settings import markdown_table


def main() -> int:
    sys.stdout.write(markdown_table(SETTINGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
