#!/usr/bin/env bash
# Submit a multi-seed zoo as Slurm job arrays, one array per stage (stage 0 the base models,
# 1 what starts from them, 2 the distilled students), each starting once the one before it
# has ended well (--dependency=afterok). Arguments are `feedlens zoo`'s, e.g.
#   scripts/slurm/submit-zoo.sh --seeds 0..8 --out checkpoints
# Prints the job id of the last stage (for `submit-report.sh --after ID`). Environment: see
# lib.sh (FEEDLENS, SBATCH_OPTS, LOGS).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
submit_stages zoo "$@"
echo "$job"
