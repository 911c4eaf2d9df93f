"""Helpers for the browser tests: a real JupyterLab server and a Playwright-driven notebook page."""
