import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DomainError } from '@flotilla/domain';
import { HostImageCatalogue } from './image-catalogue';

function refusal(f: () => unknown): { code: string; message: string } | undefined {
  try {
    f();
  } catch (e) {
    return { code: (e as DomainError).code, message: (e as Error).message };
  }
  return undefined;
}

describe('HostImageCatalogue', () => {
  let dir: string;
  let catalogue: HostImageCatalogue;
  const kernel = Buffer.from('not really a kernel');
  const sha = createHash('sha256').update(kernel).digest('hex');

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cat-'));
    fs.mkdirSync(path.join(dir, 'images', 'demo'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'images', 'demo', 'vmlinuz'), kernel);
    fs.writeFileSync(path.join(dir, 'secret'), 'host file');
    fs.symlinkSync(path.join(dir, 'secret'), path.join(dir, 'images', 'demo', 'escape'));
    catalogue = new HostImageCatalogue(path.join(dir, 'images'), 'host-1');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('resolves a file inside the catalogue whose content matches the recorded sha256', () => {
    expect(catalogue.resolve('spec.boot.kernel', 'demo/vmlinuz', sha)).toBe(
      fs.realpathSync(path.join(dir, 'images', 'demo', 'vmlinuz')),
    );
  });

  it('refuses a file whose content is not what the catalogue registered', () => {
    expect(
      refusal(() => catalogue.resolve('spec.boot.kernel', 'demo/vmlinuz', 'ab'.repeat(32))),
    ).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('sha256 differs'),
    });
  });

  it('refuses paths that leave the catalogue, and says what to do about a missing file', () => {
    for (const bad of ['../secret', '/etc/passwd', 'demo/../../secret', 'demo/escape'])
      expect(refusal(() => catalogue.resolve('spec.boot.kernel', bad))?.code).toBe('INVALID_ARGUMENT');
    expect(refusal(() => catalogue.resolve('spec.boot.initrd', 'demo/initrd.img'))).toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringContaining('missing on host host-1'),
    });
  });
});
