// Waits payload.ms milliseconds (default 60000), then returns.
// With payload.onlyFirstAttempt, a retry (attempts > 1, e.g. after a crash and a
// force-unlock) returns at once, so tests can see a rescued job finish quickly.
// Ends early, with an error, when the worker aborts the job (graceful shutdown).
module.exports = async (payload, helpers) => {
  if (payload && payload.onlyFirstAttempt && helpers.job.attempts > 1) {
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
