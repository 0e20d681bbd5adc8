#!/bin/bash
# Predict a whole volume, then decode it, each as a daisy task whose workers are SLURM jobs.
#
# Run it where the scheduler may live for the whole job and the compute nodes can reach it, e.g.
# on a login node inside tmux: it only schedules. Each worker is started through --worker-command:
# srun run outside an allocation asks SLURM for a new one per worker, which loads the network once
# and pulls blocks until none are left; a worker that dies has its block retried by another.
# Rerun the same script after a failure: both steps skip the blocks already done.
#
# What must be shared: the file system holding the checkpoint, the input, the outputs and this
# environment (every node runs the same python); and the scheduler's port on this host, which
# the workers connect to over TCP (daisy picks a free one; set DAISY_HOST to the address the
# nodes reach this host by when it has several). For LSF, use "bsub -I -n 2 -gpu num=1".
set -euo pipefail

CHECKPOINT=${CHECKPOINT:-/shared/run/checkpoint_20000.pth.tar}
INPUT=${INPUT:-/shared/em/volume.zarr/raw}
OUTPUT=${OUTPUT:-/shared/predictions}
MODE=${MODE:-boundary}  # the decoder of the network's target: binary, bc, boundary or affinity

# 1. Prediction: 8 workers, one GPU each, into a zarr prediction (PyTC's layout, uint8 x 255).
connectomics-mednext --inference --checkpoint "$CHECKPOINT" \
    --workers "${PREDICT_WORKERS:-8}" --worker-command "srun --ntasks=1 --gres=gpu:1 --cpus-per-task=8 --time=12:00:00" \
    INFERENCE.IMAGE_NAME "$INPUT" INFERENCE.OUTPUT_PATH "$OUTPUT" INFERENCE.OUTPUT_NAME volume.zarr

# 2. Decoding: 32 CPU workers, blockwise into one zarr label array (OME-Zarr, opens in neuroglancer and napari).
connectomics-mednext-segment --prediction "$OUTPUT/volume.zarr" --mode "$MODE" \
    --output "$OUTPUT/segmentation.zarr/neurons" --block-size 64 512 512 \
    --workers "${SEGMENT_WORKERS:-32}" --worker-command "srun --ntasks=1 --cpus-per-task=2 --mem=16G --time=4:00:00"
