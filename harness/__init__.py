"""circuit-trajectories: when, during training, do attention circuits form? (README.md; entry points in harness.cli)"""
