"""One recipe a backend: the plan that installs it on this machine. Adding an installable backend is its
registry record (installable=True) and its file here, named in RECIPES."""

from __future__ import annotations

from collections.abc import Callable

from attn_doctor.actions.recipes import fa2, fa3, fa4, sage, xformers
from attn_doctor.actions.recipes.context import Recipe, RecipeContext

RECIPES: dict[str, Callable[[RecipeContext], Recipe]] = {
    "fa2": fa2.fa2,
    "fa3": fa3.fa3,
    "fa4": fa4.fa4,
    "sage": sage.sage,
    "xformers": xformers.xformers,
}
