"""Thin Prefect flows wrapping the unetgeo stages."""
