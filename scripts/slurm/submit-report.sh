#!/usr/bin/env bash
# Submit a report as Slurm job arrays: stage 0 (each checkpoint's analyses, the difference
# lenses), stage 1 (each pair and seed-floor run; afterok stage 0), then one merge job
# (afterok stage 1) that writes the report. Arguments are `feedlens report`'s, e.g.
#   scripts/slurm/submit-report.sh --pairs checkpoints/pairs.toml --out reports/zoo
# With `--after JOB` first (the zoo's last job), it submits itself as a small job that waits
# for JOB, since the report is planned from the finished checkpoints.
# Prints the merge job's id. Environment: as submit-zoo.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fl=${FEEDLENS:-feedlens}
logs=${LOGS:-slurm-logs}
mkdir -p "$logs"
if [[ ${1:-} == --after ]]; then
    after=$2
    shift 2
    # shellcheck disable=SC2086
    job=$(sbatch --parsable ${SBATCH_OPTS:-} --dependency="afterok:$after" \
        --job-name=feedlens-plan --time=00:10:00 --output="$logs/%x-%j.out" --export=ALL \
        --wrap="$(printf '%q ' "$here/submit-report.sh" "$@")")
    echo "report: planned by job ${job%%;*} once job $after has ended well" >&2
    echo "${job%%;*}"
    exit 0
fi
plan=$("$fl" plan report "$@")
stages=$(cut -f2 <<<"$plan" | sort -n | uniq)
dep=()
for s in $stages; do
    n=$("$fl" plan --count report "$@" --stage "$s")
    [[ $n -gt 0 ]] || continue
    # shellcheck disable=SC2086
    job=$(sbatch --parsable ${SBATCH_OPTS:-} "${dep[@]}" --array="0-$((n - 1))" \
        --output="$logs/%x-s$s-%A_%a.out" --export=ALL "$here/report-stage.sbatch" "$s" "$@")
    job=${job%%;*}
    echo "report stage $s: $n units, job $job" >&2
    dep=(--dependency="afterok:$job")
done
# shellcheck disable=SC2086
job=$(sbatch --parsable ${SBATCH_OPTS:-} "${dep[@]}" --output="$logs/%x-%j.out" \
    --export=ALL "$here/report-merge.sbatch" "$@")
echo "report merge: job ${job%%;*}" >&2
echo "${job%%;*}"
