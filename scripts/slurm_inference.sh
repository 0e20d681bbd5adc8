#!/bin/bash
#SBATCH --job-name=mednext-infer
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=24:00:00
# One torchrun per node; each starts one rank per GPU. The first node hosts the rendezvous.
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node=4 \
    --rdzv_backend=c10d --rdzv_endpoint="$head:29500" --rdzv_id="$SLURM_JOB_ID" \
    scripts/main.py --distributed --inference --checkpoint /shared/run/checkpoint_20000.pth.tar \
    INFERENCE.IMAGE_NAME /shared/em/volume.zarr/raw \
    INFERENCE.OUTPUT_PATH /shared/predictions INFERENCE.OUTPUT_NAME volume.zarr
