import { checkAddress, checkUrl, isInternalAddress, parseUrlAllowList, UrlAllowEntry } from './url-policy';

// Pure: no resolver, no socket.

function list(value: string): UrlAllowEntry[] {
  const parsed = parseUrlAllowList(value);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.value;
}

function allowed(url: string, allow: string): boolean {
  return checkUrl(url, list(allow)).ok;
}

describe('the import URL allow-list', () => {
  it('turns URL imports off when empty, saying how to turn them on', () => {
    const v = checkUrl('https://images.example.com/a.qcow2', list(' '));
    expect(v).toEqual({ ok: false, reason: expect.stringMatching(/turned off.*FLOTILLA_IMPORT_URL_ALLOW/) });
  });

  it.each([
    ['ftp://example.com/', 'must be http:// or https://'],
    ['https://u:p@example.com/x', 'must not carry credentials'],
    ['https://example.com/x?q=1', 'must not have a query'],
    ['exa mple.com', 'is neither'],
    ['[zz::1]', 'is neither'],
    ['example.com:99999', 'port outside'],
  ])('refuses the entry %s', (entry, why) => {
    const parsed = parseUrlAllowList(`example.org,${entry}`);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toContain(why);
  });

  it('allows a URL under a prefix entry on a path-segment boundary only', () => {
    const allow = 'https://images.example.com/pub';
    expect(allowed('https://images.example.com/pub/a.qcow2', allow)).toBe(true);
    expect(allowed('https://images.example.com/pub', allow)).toBe(true);
    expect(allowed('https://images.example.com/public/a.qcow2', allow)).toBe(false);
    expect(allowed('http://images.example.com/pub/a.qcow2', allow)).toBe(false);
    expect(allowed('https://images.example.com:8443/pub/a.qcow2', allow)).toBe(false);
    expect(allowed('https://evil.com/pub/a.qcow2', allow)).toBe(false);
  });

  it('allows exact hosts, subdomains of a wildcard (not its apex) and pinned ports', () => {
    expect(allowed('http://images.example.com/x', 'images.example.com')).toBe(true);
    expect(allowed('https://images.example.com:8443/x', 'images.example.com')).toBe(true);
    expect(allowed('https://images.example.com.evil.com/x', 'images.example.com')).toBe(false);
    expect(allowed('https://a.b.example.com/x', '*.example.com')).toBe(true);
    expect(allowed('https://example.com/x', '*.example.com')).toBe(false);
    expect(allowed('https://badexample.com/x', '*.example.com')).toBe(false);
    expect(allowed('https://h.example.com/x', 'h.example.com:443')).toBe(true);
    expect(allowed('https://h.example.com:444/x', 'h.example.com:443')).toBe(false);
    expect(allowed('http://127.0.0.1:8080/x', '127.0.0.1:8080')).toBe(true);
    expect(allowed('http://[::1]:8080/x', '[0:0::1]')).toBe(true);
  });

  it.each([
    ['file:///etc/passwd', 'must be http:// or https://'],
    ['gopher://example.com/', 'must be http:// or https://'],
    ['https://user:secret@example.com/a', 'must not carry credentials'],
    ['not a url', 'not a valid absolute URL'],
    ['https://other.com/a', 'not on the import allow-list'],
  ])('refuses %s', (url, why) => {
    const v = checkUrl(url, list('example.com'));
    expect(v.ok).toBe(false);
    if (!v.ok) expect(v.reason).toContain(why);
  });
});

describe('the address check', () => {
  it.each([
    '127.0.0.1',
    '127.9.9.9',
    '10.1.2.3',
    '172.20.0.1',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '0.0.0.0',
    '224.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fd00::1',
    '::ffff:127.0.0.1',
    '::ffff:a9fe:a9fe',
    '64:ff9b::a00:1',
  ])('counts %s as internal', (ip) => {
    expect(isInternalAddress(ip)).toBe(true);
  });

  it.each(['93.184.216.34', '8.8.8.8', '2606:4700::1111', '::ffff:8.8.8.8'])('counts %s as public', (ip) => {
    expect(isInternalAddress(ip)).toBe(false);
  });

  it('refuses an internal address reached through a host name, allows one the list names itself', () => {
    const byName = checkUrl('http://localhost:8080/x', list('localhost'));
    expect(byName.ok).toBe(true);
    if (byName.ok) expect(checkAddress('127.0.0.1', byName.value.entries)).toMatchObject({ ok: false });
    const byAddress = checkUrl('http://127.0.0.1:8080/x', list('http://127.0.0.1:8080/'));
    expect(byAddress.ok).toBe(true);
    if (byAddress.ok) expect(checkAddress('127.0.0.1', byAddress.value.entries)).toMatchObject({ ok: true });
  });

  it('refuses the metadata address under a wildcard entry and allows public addresses', () => {
    const v = checkUrl('http://meta.example.com/latest', list('*.example.com'));
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(checkAddress('169.254.169.254', v.value.entries)).toEqual({
      ok: false,
      reason: expect.stringContaining('internal to the installation'),
    });
    expect(checkAddress('93.184.216.34', v.value.entries)).toEqual({ ok: true, value: '93.184.216.34' });
  });
});
