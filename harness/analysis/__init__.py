"""Trajectory analysis: pure functions over the result store (no model is loaded)."""
from harness.analysis.families import analyze_families, family_of
from harness.analysis.findings import analyze_experiment, analyze_model, load_findings, model_dirs
from harness.analysis.load import AnalysisError
from harness.analysis.rules import Rules

__all__ = ["AnalysisError", "Rules", "analyze_experiment", "analyze_families", "analyze_model", "family_of",
           "load_findings", "model_dirs"]
