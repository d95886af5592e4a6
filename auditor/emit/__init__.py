"""Emitters: turn audit results into files in each ecosystem's own format."""
