"""The former home of the ablations, kept so that code and notebooks importing ``dipreg.ablation`` run.

Book: chapter "Ablations". New code imports the computation from :mod:`dipreg.experiments.ablation` and the
tables, figures and widgets from :mod:`dipreg.teaching.ablation_view`.
"""

from dipreg.experiments.ablation import (
    ABLATION_AXES,
    AblationGrid,
    axis_default,
    load_grid,
    lookup,
    run_grid,
    setting_for,
    value_label,
)
from dipreg.teaching.ablation_view import AblationWidgets, axis_table, figure_png, make_widgets, plot_axis, plot_setting

__all__ = [
    "ABLATION_AXES",
    "AblationGrid",
    "AblationWidgets",
    "axis_default",
    "axis_table",
    "figure_png",
    "load_grid",
    "lookup",
    "make_widgets",
    "plot_axis",
    "plot_setting",
    "run_grid",
    "setting_for",
    "value_label",
]
