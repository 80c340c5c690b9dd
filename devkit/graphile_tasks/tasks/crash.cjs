// A poison pill: kills its own worker process (like a native crash or an OOM kill).
module.exports = async () => {
  process.kill(process.pid, "SIGKILL");
};
