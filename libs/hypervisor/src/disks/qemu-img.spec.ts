import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QemuImg, QemuImgError, qemuImgLimits } from './qemu-img';
import { describeWithQemuImg } from './qemu-img.testing';

// Real: qemu-img and prlimit on real files. A stand-in "qemu-img" script (run by prlimit exactly as the
// real one) shows the limits the process gets and how cancellation and limit overruns end it.

describeWithQemuImg('qemu-img runner', () => {
  let dir: string;
  const file = (name: string) => path.join(dir, name);
  const qemuImg = new QemuImg();
  const metadata = qemuImg.limits('metadata');
  /** A stand-in binary: a shell script in place of qemu-img. */
  const fake = (name: string, body: string) => {
    fs.writeFileSync(file(name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return new QemuImg({ binary: file(name) });
  };

  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-qemu-img-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses to run a subcommand whose format is not explicit', async () => {
    await expect(qemuImg.run({ args: ['info', file('x')], limits: metadata })).rejects.toThrow(
      'without -f: the format must be explicit',
    );
    await expect(
      qemuImg.run({ args: ['convert', '-f', 'raw', file('a'), file('b')], limits: metadata }),
    ).rejects.toThrow('without -O');
  });

  it('runs qemu-img under the CPU-time, address-space and core limits it is given', async () => {
    const limited = fake('limits', 'ulimit -t; ulimit -v; ulimit -c');
    const out = await limited.run({
      args: ['info', '-f', 'qcow2', 'x'],
      limits: { cpuSeconds: 7, memoryBytes: 512 * 1024 * 1024 },
    });
    expect(out.stdout.trim().split('\n')).toEqual(['7', String(512 * 1024), '0']);
  });

  it('scales the CPU limit of data work with the image size, compressing most', () => {
    const small = qemuImgLimits('data', 1024 ** 3);
    const big = qemuImgLimits('data', 100 * 1024 ** 3);
    expect(big.cpuSeconds).toBeGreaterThan(small.cpuSeconds);
    expect(qemuImgLimits('compress', 1024 ** 3).cpuSeconds).toBeGreaterThan(small.cpuSeconds);
    expect(qemuImgLimits('metadata', 100 * 1024 ** 3)).toEqual(qemuImgLimits('metadata', 0));
  });

  it('stops a run that exceeds its CPU-time limit and says so', async () => {
    const spinning = fake('spin', 'while :; do :; done');
    const failure = await spinning
      .run({ args: ['check', '-f', 'qcow2', 'x'], limits: { cpuSeconds: 1, memoryBytes: 1024 ** 3 } })
      .catch((e: QemuImgError) => e);
    expect(failure).toMatchObject({ failure: 'limit' });
    expect(String(failure)).toContain('CPU-time limit of 1 s');
  });

  it('turns qemu-img stderr into the error message', async () => {
    const failure = await qemuImg
      .run({ args: ['info', '--output=json', '-f', 'qcow2', file('missing.qcow2')], limits: metadata })
      .catch((e: QemuImgError) => e);
    expect(failure).toBeInstanceOf(QemuImgError);
    expect((failure as QemuImgError).message).toMatch(/qemu-img info failed \(exit code 1\): Could not open/);
  });

  it('reports progress from -p output, ending at 1', async () => {
    fs.writeFileSync(file('data.raw'), Buffer.alloc(32 * 1024 * 1024, 7));
    const seen: number[] = [];
    await qemuImg.run({
      args: ['convert', '-p', '-f', 'raw', '-O', 'qcow2', file('data.raw'), file('data.qcow2')],
      limits: qemuImg.limits('data', 32 * 1024 * 1024),
      onProgress: (f) => seen.push(f),
    });
    expect(seen.length).toBeGreaterThan(1);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(seen[seen.length - 1]).toBe(1);
  });

  it('kills the run when its signal aborts', async () => {
    const slow = fake('slow', 'exec sleep 30');
    const controller = new AbortController();
    const running = slow.run({
      args: ['info', '-f', 'qcow2', 'x'],
      limits: metadata,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    await expect(running).rejects.toMatchObject({ failure: 'cancelled' });
  });
});
