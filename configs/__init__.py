"""Experiment configs: `configs/<method>.py::get_config(arg)` (see common)."""
