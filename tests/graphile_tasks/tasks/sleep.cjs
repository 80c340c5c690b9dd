// Waits payload.ms milliseconds (default 60000), then returns.
// Ends early, with an error, when the worker aborts the job (graceful shutdown).
module.exports = async (payload, helpers) => {
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
