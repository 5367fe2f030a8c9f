"""Rendering: cameras to rays, samplers, compositing."""
