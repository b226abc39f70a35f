/**
 * Resolves when a writable (a gRPC call, an HTTP response, a file) takes more after write() returned false,
 * or is gone: waiting on 'drain' alone would hang forever once the other side has closed.
 */
export function drained(w: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}
