module.exports = async () => {
  await globalThis.__FLOTILLA_EMBEDDED_PG__?.stop();
};
