-- Each run's latest status: the row that decides its state, by the one definition in
-- shared/core/src/run_state.rs (tested against it on bqemulator: tests/tests/gcp_emulators.rs).
--   1. a job's last attempt (or the run's last end: a re-run ends it again, with the next
--      attempt) that FAILED, TIMED_OUT or was REJECTED (a failed attempt with a
--      retry pending is not the last), whatever other jobs' attempts were;
--   2. else the run's end (the submit step's row that names no job);
--   3. else the newest row (by time, then step in chain order, then status progress).
-- run_status is the row's status, or RETRYING when it is a failed attempt waiting for its retry.
-- Terraform fills in the run-log table (templatefile: run_log).
SELECT
  * EXCEPT (job_key, last_attempt, retry_pending, deciding),
  IF(retry_pending, 'RETRYING', status) AS run_status
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY run_id
      ORDER BY
        IF(status IN ('FAILED', 'TIMED_OUT', 'REJECTED') AND NOT retry_pending
          AND attempt = last_attempt, 1, 0) DESC,
        IF(job_key IS NULL, 1, 0) DESC,
        td_timestamp DESC,
        CASE step WHEN 'poll' THEN 4 WHEN 'submit' THEN 3 WHEN 'load' THEN 2 WHEN 'stage' THEN 1 ELSE 0 END DESC,
        CASE status WHEN 'QUEUED' THEN 0 WHEN 'SUBMITTED' THEN 1 WHEN 'RUNNING' THEN 2 ELSE 3 END DESC
    ) AS deciding
  FROM (
    SELECT
      *,
      MAX(attempt) OVER (PARTITION BY run_id, job_key) AS last_attempt
    FROM (
      SELECT
        *,
        CASE
          WHEN step = 'submit' AND job IS NULL AND job_id IS NULL AND dataproc_job_id IS NULL THEN NULL
          WHEN job IS NOT NULL THEN job
          WHEN dataproc_job_id IS NOT NULL OR step IN ('submit', 'poll') THEN 'batch'
          ELSE step
        END AS job_key,
        (status = 'FAILED' AND JSON_VALUE(detail, '$.retry_at') IS NOT NULL) AS retry_pending
      FROM `${run_log}`
    )
  )
)
WHERE deciding = 1
