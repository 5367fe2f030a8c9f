"""Meshes from fields: grid / coarse-to-fine evaluation, marching cubes, closing, export."""
