import { lookup as dnsLookup } from 'node:dns/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import { DomainError, ErrorCode, invalidArgument } from '@flotilla/domain';
import { checkAddress, checkUrl, UrlAllowEntry } from './url-policy';

const maxRedirects = 3;
const field = 'header.source_url';

/** An opened image URL: its headers were checked; `body` yields exactly `sizeBytes` bytes or throws. */
export interface OpenedUrl {
  /** The URL the bytes come from (after redirects), without query: for records and logs. */
  where: string;
  body: AsyncIterable<Buffer>;
  /** Drops the connection (the body then throws or ends). */
  close(): void;
}

export interface UrlSourceOptions {
  allow: readonly UrlAllowEntry[];
  /** Connect, answer headers, and every pause between body bytes. */
  idleTimeoutMs: number;
  /** Resolves a host name to its addresses (DNS); injectable for tests. */
  resolve?: (host: string) => Promise<string[]>;
}

/**
 * Fetches import images over http(s) under the outbound URL policy: each URL (the first and every redirect)
 * is checked against the allow-list, its host resolved here and every address checked before connecting,
 * and the connection made to the checked address (no second resolution an attacker's DNS could change).
 * Streams: nothing is buffered beyond the socket's own window.
 */
export class UrlSource {
  private readonly resolve: (host: string) => Promise<string[]>;

  constructor(private readonly options: UrlSourceOptions) {
    this.resolve =
      options.resolve ??
      (async (host) => (await dnsLookup(host, { all: true, verbatim: true })).map((a) => a.address));
  }

  /** Checks the URL against the allow-list only (no I/O): the reason, for a quick refusal at the edge. */
  precheck(raw: string): void {
    const v = checkUrl(raw, this.options.allow);
    if (!v.ok) throw refusal(v.reason);
  }

  /**
   * Opens `raw`, following at most 3 redirects the policy also allows, and checks the answer: 200, and a
   * Content-Length (when sent) equal to sizeBytes. The body is cut and refused past sizeBytes or short of it.
   */
  async open(raw: string, sizeBytes: number, signal?: AbortSignal): Promise<OpenedUrl> {
    let current = raw;
    for (let hop = 0; ; hop++) {
      const v = checkUrl(current, this.options.allow);
      if (!v.ok)
        throw refusal(
          hop ? `redirects to ${safe(current)}, which ${v.reason.replace(/^\S+ /, '')}` : v.reason,
        );
      const { url, entries } = v.value;
      const address = await this.address(url, entries);
      const res = await this.get(url, address, signal);
      const status = res.statusCode ?? 0;
      if ([301, 302, 303, 307, 308].includes(status)) {
        res.resume();
        res.destroy();
        const location = res.headers.location;
        if (!location) throw refusal(`${safe(url.href)} answered HTTP ${status} without a Location`);
        if (hop >= maxRedirects)
          throw refusal(
            `redirects more than ${maxRedirects} times (last to ${safe(location)}): give the final URL`,
          );
        try {
          current = new URL(location, url).href;
        } catch {
          throw refusal(`${safe(url.href)} redirects to an invalid URL`);
        }
        continue;
      }
      if (status !== 200) {
        res.resume();
        res.destroy();
        const what = `${safe(url.href)} answered HTTP ${status} ${res.statusMessage ?? ''}`.trim();
        if (status >= 500 || status === 429)
          throw new DomainError(ErrorCode.Unavailable, `${field}: ${what}: try again later`, { field });
        throw refusal(`${what}: check the URL`);
      }
      const length = res.headers['content-length'];
      if (length !== undefined && Number(length) !== sizeBytes) {
        res.destroy();
        throw invalidArgument(
          'header.size_bytes',
          `is ${sizeBytes} but ${safe(url.href)} has Content-Length ${length}: give the exact size of the file`,
        );
      }
      return { where: safe(url.href), body: this.bounded(res, sizeBytes), close: () => res.destroy() };
    }
  }

  /** The first resolved address the policy allows; the refusal names the first one refused. */
  private async address(url: URL, entries: UrlAllowEntry[]): Promise<string> {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let addresses: string[];
    if (isIP(host)) addresses = [host];
    else {
      try {
        addresses = await this.resolve(host);
      } catch (e) {
        throw new DomainError(
          ErrorCode.Unavailable,
          `${field}: the host name ${host} does not resolve (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
          { field },
        );
      }
    }
    let reason = `${host} has no address`;
    for (const a of addresses) {
      const ok = checkAddress(a, entries);
      if (ok.ok) return ok.value;
      reason = `${host} ${ok.reason}`;
    }
    throw refusal(reason);
  }

  private get(url: URL, address: string, signal?: AbortSignal): Promise<http.IncomingMessage> {
    const family = isIP(address);
    // The connection goes to the checked address; TLS still verifies the certificate for the host name.
    const lookup = (
      _host: string,
      opts: { all?: boolean },
      cb: (err: Error | null, a: string | Array<{ address: string; family: number }>, f?: number) => void,
    ) => (opts.all ? cb(null, [{ address, family }]) : cb(null, address, family));
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.get(
        url,
        {
          lookup: lookup as unknown as http.RequestOptions['lookup'],
          signal,
          headers: { 'user-agent': 'flotilla-storage', 'accept-encoding': 'identity' },
          agent: false,
        },
        (res) => {
          res.setTimeout(this.options.idleTimeoutMs, () =>
            res.destroy(idle(`${safe(url.href)} sent nothing for ${this.options.idleTimeoutMs} ms`)),
          );
          resolve(res);
        },
      );
      req.setTimeout(this.options.idleTimeoutMs, () =>
        req.destroy(idle(`${safe(url.href)} did not answer within ${this.options.idleTimeoutMs} ms`)),
      );
      req.once('error', (e) =>
        reject(
          e instanceof DomainError
            ? e
            : new DomainError(
                ErrorCode.Unavailable,
                `${field}: fetching ${safe(url.href)} failed: ${e.message}`,
                {
                  field,
                },
              ),
        ),
      );
    });
  }

  private async *bounded(res: http.IncomingMessage, sizeBytes: number): AsyncIterable<Buffer> {
    let received = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        received += chunk.length;
        if (received > sizeBytes)
          throw invalidArgument(
            'header.size_bytes',
            `is ${sizeBytes} but the URL sends more bytes: give the exact size of the file`,
          );
        yield chunk;
      }
    } catch (e) {
      if (e instanceof DomainError) throw e;
      throw new DomainError(
        ErrorCode.Unavailable,
        `${field}: the download broke off after ${received} bytes: ${(e as Error).message}`,
        {
          field,
        },
      );
    } finally {
      res.destroy();
    }
    if (received !== sizeBytes)
      throw invalidArgument(
        'header.size_bytes',
        `is ${sizeBytes} but the URL sent ${received} bytes: give the exact size of the file`,
      );
  }
}

function refusal(reason: string): DomainError {
  return reason.includes('turned off')
    ? new DomainError(ErrorCode.FailedPrecondition, `${field}: ${reason}`, { field })
    : invalidArgument(field, reason);
}

function idle(message: string): DomainError {
  return new DomainError(ErrorCode.DeadlineExceeded, `${field}: ${message}`, { field });
}

/** The URL without its query (signed URLs carry secrets there) for messages and records. */
function safe(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return raw.slice(0, 200);
  }
}
