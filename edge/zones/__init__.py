"""Zones on a camera's picture (README "Zones"): beds, danger areas and watched areas."""
