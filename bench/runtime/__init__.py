"""Where runs live and how processes share them: MLflow tracking, checkpoints, the Optuna trial
queue, worker processes, study names and run tags."""
