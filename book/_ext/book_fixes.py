"""Local Sphinx extension with two fixes for Jupyter Book 1.x and its pinned extensions.

1. The student build: drop gated solutions cleanly. With ``hide_solutions: true``, sphinx-exercise
   1.2.1 removes a ``solution-start`` directive but keeps the matching ``solution-end`` node, and the
   HTML writer then fails on it. Here ``solution-start`` becomes a marker when solutions are hidden,
   and everything from the marker to the ``solution-end`` node is deleted. With solutions shown
   nothing changes.

2. sphinx-thebe 0.3.1 registers its configuration script twice in a Jupyter Book build, so every page
declares ``const THEBE_JS_URL`` twice and the browser logs an error. Each page's scripts are made unique.
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


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for js in context.get("script_files", []):
        attrs = getattr(js, "attributes", {})
        key = (getattr(js, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.setup_extension("sphinx_exercise")
    app.connect("html-page-context", _unique_scripts, priority=900)
    app.add_directive("solution-start", _SolutionStart, override=True)
    app.add_transform(_DropHiddenSolutions)
    return {"parallel_read_safe": True}
