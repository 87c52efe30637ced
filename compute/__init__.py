"""EditScope compute side: models, knowledge base and cases, editors, evaluations, experiments, runner and CLI."""
