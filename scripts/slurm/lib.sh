# Shared by submit-zoo.sh and submit-report.sh (sourced): the binary, the log folder, and one
# job array per stage of a command's work units, chained with --dependency=afterok.
# Environment: FEEDLENS (the binary; default: feedlens on PATH), SBATCH_OPTS (extra sbatch
# options, e.g. "--partition=cpu --account=me"), LOGS (log folder; default slurm-logs).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fl=${FEEDLENS:-feedlens}
logs=${LOGS:-slurm-logs}
mkdir -p "$logs"

# submit SBATCH-ARGS...: sbatch with SBATCH_OPTS; prints the job id.
submit() {
    local id
    # shellcheck disable=SC2086
    id=$(sbatch --parsable ${SBATCH_OPTS:-} --export=ALL "$@")
    echo "${id%%;*}"
}

# submit_stages VERB ARGS...: one array per stage of `feedlens plan VERB ARGS`, each afterok
# the one before; sets `job` to the last array's id (empty when the plan is empty).
submit_stages() {
    local verb=$1 s n dep=()
    shift
    job=
    for s in $("$fl" plan "$verb" "$@" | cut -f2 | sort -n | uniq); do
        n=$("$fl" plan --count "$verb" "$@" --stage "$s")
        [[ $n -gt 0 ]] || continue
        job=$(submit "${dep[@]}" --array="0-$((n - 1))" --job-name="feedlens-$verb" \
            --output="$logs/%x-s$s-%A_%a.out" "$here/stage.sbatch" "$verb" "$s" "$@")
        echo "$verb stage $s: $n units, job $job" >&2
        dep=(--dependency="afterok:$job")
    done
}
