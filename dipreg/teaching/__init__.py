"""Teaching: what the book's chapters use beyond the library.

Book: every chapter (``book/*.ipynb``).

* :mod:`~dipreg.teaching.book`: the run profile (CPU or GPU), the stored results, ``glue``.
* :mod:`~dipreg.teaching.checks`: the checks of the code exercises, one module per chapter.
* :mod:`~dipreg.teaching.grade`: grading a student's notebook offline (``dipreg grade``).
* :mod:`~dipreg.teaching.ablation_view`: tables, figures and widgets of the stored ablation grid.
"""

from dipreg.teaching import book, checks

__all__ = ["book", "checks"]
