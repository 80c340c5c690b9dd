// Always fails, with payload.message as the error message.
module.exports = async (payload) => {
  throw new Error((payload && payload.message) || "fail task failed");
};
