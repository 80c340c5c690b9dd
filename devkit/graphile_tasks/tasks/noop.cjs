// Does nothing and succeeds.
module.exports = async () => {};
