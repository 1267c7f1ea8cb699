#!/usr/bin/env bash
# Submit a report as Slurm job arrays: stage 0 (each checkpoint's analyses, the difference
# lenses), stage 1 (each pair and seed-floor run; afterok stage 0), then one merge job
# (afterok stage 1) that writes the report. Arguments are `feedlens report`'s, e.g.
#   scripts/slurm/submit-report.sh --pairs checkpoints/pairs.toml --out reports/zoo
# With `--after JOB` first (the zoo's last job), it submits itself as a small job that waits
# for JOB, since the report is planned from the finished checkpoints.
# Prints the merge job's id. Environment: see lib.sh (FEEDLENS, SBATCH_OPTS, LOGS).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
if [[ ${1:-} == --after ]]; then
    after=$2
    shift 2
    job=$(submit --dependency="afterok:$after" --job-name=feedlens-plan --time=00:10:00 \
        --output="$logs/%x-%j.out" --wrap="$(printf '%q ' "$here/submit-report.sh" "$@")")
    echo "report: planned by job $job once job $after has ended well" >&2
    echo "$job"
    exit 0
fi
submit_stages report "$@"
job=$(submit ${job:+--dependency="afterok:$job"} --output="$logs/%x-%j.out" \
    "$here/report-merge.sbatch" "$@")
echo "report merge: job $job" >&2
echo "$job"
