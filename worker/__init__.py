"""convlab's worker side: the task contract (specs), the Celery app and tasks, and the experiments."""
