// Waits payload.ms milliseconds (default 60000), then returns.
// With payload.onlyFirstAttempt, a rerun after a crash returns at once (attempts > 1, or
// a last_error left by airflow-graphile's rescue, which gives the attempt back), so tests
// can see a rescued job finish quickly. With payload.record, first records the run in
// public.job_runs (the test creates it), so a test can count runs.
// Ends early, with an error, when the worker aborts the job (graceful shutdown).
module.exports = async (payload, helpers) => {
  if (payload && payload.record) {
    await helpers.withPgClient((client) =>
      client.query(
        "insert into public.job_runs (job_id, attempts, pid) values ($1, $2, $3)",
        [helpers.job.id, helpers.job.attempts, process.pid],
      ),
    );
  }
  const rescued = String(helpers.job.last_error || "").startsWith("airflow-graphile:");
  if (payload && payload.onlyFirstAttempt && (helpers.job.attempts > 1 || rescued)) {
    return;
  }
  const ms = payload && typeof payload.ms === "number" ? payload.ms : 60000;
  const signal = helpers && helpers.abortSignal;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new Error("sleep aborted"));
      });
    }
  });
};
