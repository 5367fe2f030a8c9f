#!/bin/bash
# Whole fit-nerf + render commands on lego, one JSON line per run.
#   bash benchmarks/lego_whole_commands.sh LEGO_FOLDER OUT.jsonl ["60 torch" "60 triton RECON3D_CUDA_GRAPHS=0" ...]
# Each run: a budget in seconds, the hash-grid kernel (torch | triton), then environment settings (NAME=VALUE)
# and fit-nerf flags.
set -u
scene=$1; out=$2; shift 2
runs=("$@"); [ ${#runs[@]} -eq 0 ] && runs=("60 torch" "60 triton" "120 triton" "120 torch")
for run in "${runs[@]}"; do
  set -- $run; budget=$1; k=$2; shift 2
  envs=(RECON3D_HASHGRID_KERNEL="$k"); flags=()
  for word in "$@"; do case $word in *=*) envs+=("$word") ;; *) flags+=("$word") ;; esac; done
  label="$k${*:+ $*}"
  s=$(date +%s.%N)
  env "${envs[@]}" python3 -m recon3d fit-nerf "$scene" -o /tmp/lego-bench.pt --force \
    --max-seconds "$budget" "${flags[@]}" --json > /tmp/lego-fit.json
  e=$(date +%s.%N)
  env "${envs[@]}" python3 -m recon3d render /tmp/lego-bench.pt --scene "$scene" --split val --json \
    > /tmp/lego-render.json
  python3 - "$label" "$budget" "$s" "$e" >> "$out" <<'PY'
import json, sys
label, budget, s, e = sys.argv[1:]
fit = json.load(open("/tmp/lego-fit.json")); r = json.load(open("/tmp/lego-render.json"))
print(json.dumps({"kernel": label, "budget": int(budget), "command_s": round(float(e) - float(s), 2),
                  "train_s": fit["seconds"], "steps": fit["steps"],
                  "Msamples_per_s": round(fit["samples_per_second"] / 1e6, 2),
                  "val_psnr": round(r["psnr"], 3), "val_ssim": round(r["ssim"], 4), "render_s": round(r["seconds"], 2)}))
PY
  tail -1 "$out"
done
