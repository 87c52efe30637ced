"""General-ability suite (study C, design.md section 8): a registry of tasks built from package data, and
their evaluation in quick or full mode with n and 95% CIs. See tasks.py for the tasks and run.py for the
evaluation."""
