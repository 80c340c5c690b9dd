// Blocks the worker's event loop: spins synchronously for payload.seconds (default 10),
// like a CPU-bound job (a big JSON.parse, an image resize). With payload.record, first
// records the run in public.job_runs (the test creates it), so a test can count runs.
module.exports = async (payload, helpers) => {
  if (payload && payload.record) {
    await helpers.withPgClient((client) =>
      client.query(
        "insert into public.job_runs (job_id, attempts, pid) values ($1, $2, $3)",
        [helpers.job.id, helpers.job.attempts, process.pid],
      ),
    );
  }
  const seconds = payload && typeof payload.seconds === "number" ? payload.seconds : 10;
  const end = Date.now() + seconds * 1000;
  let spins = 0;
  while (Date.now() < end) spins += 1;
  return spins;
};
