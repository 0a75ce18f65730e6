"""Analyses of ternary models: parameter and byte breakdowns, importance, fidelity."""
