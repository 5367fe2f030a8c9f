"""Where a fit-nerf step's time goes on a GPU: torch.profiler over 20 steps after 300 warm-up steps of lego.

    RECON3D_CUDA_GRAPHS=0 python benchmarks/profile_nerf_step.py LEGO_FOLDER > profile.txt

(The eager step: a step replayed as a CUDA graph shows the profiler one launch.)
"""
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recon3d.fit.nerf import NerfOptions, fit_nerf  # noqa: E402
from recon3d.io.scene import read_scene  # noqa: E402

device = torch.device("cuda")
train = read_scene(Path(sys.argv[1] if len(sys.argv) > 1 else "data/lego"), "train", keep_alpha=True).to(device)
prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
               schedule=schedule(wait=300, warmup=5, active=20))
prof.start()
fit_nerf(train, NerfOptions(preset="fast", steps=326, seed=0), Path("/tmp/prof.pt"), device, show_progress=False,
         on_step=lambda trainer, step: prof.step())
prof.stop()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60))
