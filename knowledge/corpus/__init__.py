"""Markdown corpus (data only; a package so wheels include the .md files)."""
