"""Post-hoc analysis (layer 5): numbers computed from models and runs, no prose."""
