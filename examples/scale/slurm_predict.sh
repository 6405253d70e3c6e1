#!/bin/bash
# A Slurm job array segmenting a list of pictures: task I of N takes shard I/N; a task that is killed
# (time limit, pre-emption) and requeued continues where it stopped (--skip-existing).
#
#   find /data/photos -name '*.jpg' > all_pictures.txt
#   sbatch --array=0-15 examples/scale/slurm_predict.sh all_pictures.txt pspnet_r50-d8_ade20k /data/masks
#   cat /data/masks/manifest-*.jsonl | grep -c '"failed"'     # what failed, with the reason, per picture
#
# Kubernetes indexed Jobs: the same command with --shard "$JOB_COMPLETION_INDEX/<completions>".
#SBATCH --job-name=pspnet-predict
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --requeue
set -euo pipefail
LIST=${1:?list of pictures}
WEIGHTS=${2:?weights}
OUT=${3:?output folder}
pspnet predict --files-from "$LIST" --weights "$WEIGHTS" --out "$OUT" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --skip-existing \
    --num-workers "$(( ${SLURM_CPUS_PER_TASK:-4} - 1 ))" --batch-size "${BATCH_SIZE:-8}"
