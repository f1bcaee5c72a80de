"""Running a recipe, from file to report: :mod:`~lightly_graft.run.pipeline`
(its docstring names the steps and the modules that take them)."""
