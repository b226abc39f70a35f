import { colourFor, pinoToText, prefixLine } from './log-prefix';

describe('log line prefixing', () => {
  it('pads the service name so every line lines up', () => {
    expect(prefixLine('db', 'hello', { width: 9 })).toBe('db        | hello');
  });

  it('rewrites a pino line as LEVEL msg key=value, dropping what every line carries', () => {
    const line = JSON.stringify({
      level: 30,
      time: 1700000000000,
      pid: 42,
      hostname: 'box',
      name: 'compute',
      service: 'compute',
      msg: 'listening',
      address: '127.0.0.1:7401',
    });
    expect(prefixLine('compute', line, { width: 7 })).toBe(
      'compute | INFO  listening address=127.0.0.1:7401',
    );
  });

  it('quotes values with spaces and prints objects as JSON', () => {
    expect(
      pinoToText(JSON.stringify({ level: 40, msg: 'slow', reason: 'disk full', sizes: { a: 1 }, ok: false })),
    ).toBe('WARN  slow reason="disk full" sizes={"a":1} ok=false');
  });

  it("keeps an error's message, not its stack", () => {
    const line = JSON.stringify({
      level: 50,
      msg: 'failed',
      err: { type: 'Error', message: 'boom', stack: 'Error: boom\n at x' },
    });
    expect(pinoToText(line)).toBe('ERROR failed err="boom"');
  });

  it('shows a JSON line without a level without one (the database ready line)', () => {
    expect(pinoToText('{"msg":"ready","url":"postgres://postgres:postgres@127.0.0.1:7490/postgres"}')).toBe(
      'ready url=postgres://postgres:postgres@127.0.0.1:7490/postgres',
    );
  });

  it.each(['plain text', '{not json}', '[1,2]', '{"a":1}', '  at Object.<anonymous> (x.js:1:1)'])(
    'passes %j through unchanged',
    (line) => {
      expect(prefixLine('gateway', line, { width: 7 })).toBe(`gateway | ${line}`);
    },
  );

  it('colours the name and the level only when asked', () => {
    const out = prefixLine('gateway', '{"level":50,"msg":"x"}', { width: 7, paint: colourFor(0) });
    expect(out).toBe('\u001b[36mgateway\u001b[0m | \u001b[31mERROR\u001b[0m x');
    expect(prefixLine('gateway', '{"level":50,"msg":"x"}', { width: 7 })).not.toContain('\u001b[');
  });
});
