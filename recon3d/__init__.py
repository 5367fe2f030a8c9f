"""recon3d: raw 3D observations to clean, watertight meshes through neural implicit fields."""

__version__ = "0.1.0"
