#!/bin/sh
# The example batch: stands in for a Spark job. Conveyor passes the run's values both as
# arguments and as CONVEYOR_* environment variables; the exit status is the batch's result.
set -eu
table="$1"
echo "aggregating ${table} (run ${CONVEYOR_RUN_ID}, attempt ${CONVEYOR_ATTEMPT})"
sleep 1
echo "done"
