"""Stage 1, the plan: YAML in, a validated :class:`Plan` of plugin steps out.

``schema`` holds the plan's sections and the :class:`Plan` / :class:`Step` the
later stages read; ``parse`` reads YAML and reports every problem with its file,
line and field; ``checks`` parses the gate expressions of ``checks:``.
"""

from xai_audit.plan.parse import load_plan, parse_plan
from xai_audit.plan.schema import FORMATS, Plan, Step

__all__ = ["FORMATS", "Plan", "Step", "load_plan", "parse_plan"]
