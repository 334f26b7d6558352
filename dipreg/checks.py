"""The former name of :mod:`dipreg.teaching.checks`, kept so that chapters and notebooks handed out before the
move (``import dipreg.checks.warping``) run and grade unchanged: importing ``dipreg.checks`` or one of its
modules gives the module of :mod:`dipreg.teaching.checks` itself.

Book: every chapter with a code exercise.
"""

import sys
from importlib import import_module

from dipreg.teaching import checks as _checks

for _name in ("ablation", "cases", "classical", "dip", "evaluation", "generator", "prior", "problem", "warping"):
    sys.modules[f"{__name__}.{_name}"] = import_module(f"dipreg.teaching.checks.{_name}")
sys.modules[__name__] = _checks
