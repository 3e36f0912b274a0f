#!/usr/bin/env bash
# On a CUDA machine, in the repository root: the CUDA-only tests, the benchmarks and the
# README's training command on the GPU. Results go to $RESULTS (default outputs/cuda_checks).
set -uo pipefail
RESULTS=${RESULTS:-outputs/cuda_checks}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"

echo "== CUDA tests (host-sync checks, AMP default)"
python -m pytest -q -p no:cacheprovider tests/training/test_cuda.py tests/losses/test_losses.py -k "cuda or sync or Cuda" 2>&1 | tail -15

echo "== benchmarks: the trainer's step, the losses alone, inference"
python scripts/benchmark.py --sections step,loss,inference --device cuda --json "$RESULTS/benchmark.json" 2>&1 | tail -40

echo "== the README's first command on the GPU"
/usr/bin/time -f "wall %e s" python train.py loss=recall trainer.num_workers=6 hydra.run.dir="$RESULTS/run_recall" 2>&1 | grep -v "it/s\]" | tail -16

echo "== the same with the whole step in a CUDA graph and the fused loss kernel"
/usr/bin/time -f "wall %e s" python train.py loss=recall loss.kernel=triton trainer.cuda_graph=true trainer.num_workers=6 \
  hydra.run.dir="$RESULTS/run_recall_graph_triton" 2>&1 | grep -v "it/s\]" | tail -16
