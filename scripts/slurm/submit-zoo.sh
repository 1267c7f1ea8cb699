#!/usr/bin/env bash
# Submit a multi-seed zoo as Slurm job arrays, one array per stage (stage 0 the base models,
# 1 what starts from them, 2 the distilled students), each starting once the one before it
# has ended well (--dependency=afterok). Arguments are `feedlens zoo`'s, e.g.
#   scripts/slurm/submit-zoo.sh --seeds 0..8 --out checkpoints
# Prints the job id of the last stage (for `submit-report.sh --after ID`).
# Environment: FEEDLENS (the binary; default: feedlens on PATH), SBATCH_OPTS (extra sbatch
# options, e.g. "--partition=cpu --account=me"), LOGS (log folder; default slurm-logs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fl=${FEEDLENS:-feedlens}
logs=${LOGS:-slurm-logs}
mkdir -p "$logs"
plan=$("$fl" plan zoo "$@")
stages=$(cut -f2 <<<"$plan" | sort -n | uniq)
dep=()
job=
for s in $stages; do
    n=$("$fl" plan --count zoo "$@" --stage "$s")
    [[ $n -gt 0 ]] || continue
    # shellcheck disable=SC2086
    job=$(sbatch --parsable ${SBATCH_OPTS:-} "${dep[@]}" --array="0-$((n - 1))" \
        --output="$logs/%x-s$s-%A_%a.out" --export=ALL "$here/zoo-stage.sbatch" "$s" "$@")
    job=${job%%;*}
    echo "zoo stage $s: $n units, job $job" >&2
    dep=(--dependency="afterok:$job")
done
echo "$job"
