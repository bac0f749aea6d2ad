"""What a checkout deploys from: its root folder, and Envoy's config derived from envoy.yaml.

Developer and operator tools (tools/), the tests and the bench read the checkout through
here; the installed service package never does.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
