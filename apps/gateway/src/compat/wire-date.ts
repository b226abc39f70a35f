/**
 * The Date a google.protobuf.Timestamp stands for. ts-proto types timestamps as Date, but grpc-js with
 * proto-loader hands them over as {seconds, nanos} (seconds a string when it is a 64-bit Long).
 */
export function wireDate(t: unknown): Date | undefined {
  if (t instanceof Date) return t;
  if (t && typeof t === 'object' && 'seconds' in t) {
    const { seconds, nanos } = t as { seconds: number | string; nanos?: number };
    return new Date(Number(seconds) * 1000 + Math.floor((nanos ?? 0) / 1e6));
  }
  return undefined;
}
