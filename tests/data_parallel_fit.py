"""One small fit-nerf run for tests/test_data_parallel.py: ``python data_parallel_fit.py SCENE OUT STEPS
SHARDS_PER_RANK``, alone or under torchrun (gloo on the CPU). The field and grid are shrunk as in
tests/test_nerf.py so the run takes seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from recon3d import distributed
from recon3d.fields.encodings import HASHGRID
from recon3d.fit import nerf
from recon3d.fit.registry import get_method
from recon3d.fit.run import fit_file


def main() -> None:
    scene, out, steps, per_rank = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    HASHGRID["cpu"].update({"n_levels": 8, "log2_table_size": 14, "max_resolution": 128})
    nerf.GRID["cpu"].update({"resolution": 32, "steps_per_diagonal": 128})
    nerf.PRESETS["fast"]["budget"]["cpu"].update({"batch": 512, "target_samples": 1 << 15})
    distributed.setup("gloo")
    with distributed.leaving_together():
        options = nerf.NerfOptions(steps=steps)
        fit_file(get_method("fit-nerf"), scene, options, out, torch.device("cpu"), show_progress=False,
                 shards_per_rank=per_rank)


if __name__ == "__main__":
    main()
    distributed.exit_if_joined(0)
