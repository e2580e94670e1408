"""Studies: the study file's schema, each row resolved once into a plan, the runner that runs
rows × seeds as Optuna trials logged to MLflow, ``bench tune`` and ``bench ablate``."""
