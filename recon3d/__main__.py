"""``python -m recon3d`` (and ``torchrun -m recon3d``): the same as the ``recon3d`` command."""

from recon3d.launch import main

if __name__ == "__main__":
    main()
