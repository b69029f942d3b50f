"""Runnable measurements: each module prints tables and writes JSON (and plots where results compare)."""
