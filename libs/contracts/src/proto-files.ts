import * as fs from 'node:fs';
import * as path from 'node:path';

/** Directory holding proto/ (grpc-js and NestJS load the .proto sources at run time). */
export const protoRoot: string = locateProtoRoot();

export type ProtoArea = 'common' | 'compute' | 'storage' | 'network' | 'migration' | 'gateway';

/** The .proto files of one area's v1 package, relative to protoRoot. */
export function protoFiles(...areas: ProtoArea[]): string[] {
  return areas.flatMap((area) => {
    const dir = path.join(protoRoot, 'flotilla', area, 'v1');
    return fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.proto'))
      .sort()
      .map((f) => `flotilla/${area}/v1/${f}`);
  });
}

function locateProtoRoot(): string {
  // Works from the sources (libs/contracts/src) and from the build (dist/libs/contracts/src).
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'proto');
    if (fs.existsSync(path.join(candidate, 'flotilla'))) return candidate;
  }
  throw new Error(`proto/ not found above ${__dirname}`);
}
