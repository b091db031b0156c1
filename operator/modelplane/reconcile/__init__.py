"""Thin Kopf handlers: load the spec, render, apply, compute status from the children."""
