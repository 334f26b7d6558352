"""The former name of :mod:`dipreg.teaching.book`, kept so that chapters and notebooks written before the move
(``import dipreg.book``; ``dipreg.book.setup()``) run unchanged: importing it gives that module itself.

Book: every chapter.
"""

import sys

from dipreg.teaching import book as _book

sys.modules[__name__] = _book
