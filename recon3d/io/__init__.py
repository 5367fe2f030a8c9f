"""Reading and writing: point clouds, meshes, checkpoints. No torch model code here."""
