"""Sphinx extension for the student build: drop gated solutions cleanly.

With ``hide_solutions: true``, sphinx-exercise 1.2.1 removes a ``solution-start`` directive but keeps the
matching ``solution-end`` node, and the HTML writer then fails on it. This extension replaces
``solution-start`` by a marker when solutions are hidden and deletes everything from the marker up to
and including the ``solution-end`` node. With solutions shown it changes nothing.
"""

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx_exercise.directive import SolutionStartDirective
from sphinx_exercise.nodes import solution_end_node


class hidden_solution_start(nodes.Element):
    """Marks where a hidden gated solution begins."""


class _SolutionStart(SolutionStartDirective):
    def run(self):
        out = super().run()
        return [hidden_solution_start()] if self.env.app.config.hide_solutions else out


class _DropHiddenSolutions(SphinxTransform):
    default_priority = 5

    def apply(self):
        for start in list(self.document.findall(hidden_solution_start)):
            parent = start.parent
            i = parent.index(start)
            j = next(k for k in range(i, len(parent.children)) if isinstance(parent.children[k], solution_end_node))
            del parent.children[i : j + 1]


def setup(app):
    app.setup_extension("sphinx_exercise")
    app.add_directive("solution-start", _SolutionStart, override=True)
    app.add_transform(_DropHiddenSolutions)
    return {"parallel_read_safe": True}
