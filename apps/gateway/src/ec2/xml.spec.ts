import { XMLParser } from 'fast-xml-parser';
import { ec2Time, el, errorDocument, escapeXml, items, leaf, responseDocument, utf8 } from './xml';

describe('EC2 XML', () => {
  it('escapes markup and quotes in text', () => {
    expect(escapeXml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
  });

  it('replaces characters XML cannot carry, so the document stays parseable', () => {
    expect(escapeXml('a\u0000b\u001bc\uD800d')).toBe('a\uFFFDb\uFFFDc\uFFFDd');
  });

  it('passes text with nothing to escape through as it is, and escapes each special character on its own', () => {
    for (const plain of ['', 'i-0123456789abcdef0', 'tab\tand\nlines\r', 'é ✓ 😀 \uFFFD'])
      expect(escapeXml(plain)).toBe(plain);
    const escaped: Array<[string, string]> = [
      ['&', '&amp;'],
      ['<', '&lt;'],
      ['>', '&gt;'],
      ['"', '&quot;'],
      ["'", '&apos;'],
      ['\u0000', '\uFFFD'],
      ['\u001F', '\uFFFD'],
      ['\uD800', '\uFFFD'],
      ['\uDC00', '\uFFFD'],
      ['\uFFFE', '\uFFFD'],
      ['\uFFFF', '\uFFFD'],
    ];
    for (const [c, out] of escaped) expect(escapeXml(`x${c}y`)).toBe(`x${out}y`);
  });

  it('writes a success document in the 2016-11-15 namespace with requestId first', () => {
    const xml = responseDocument('CreateTags', 'req-1', [leaf('return', true)]).raw;
    expect(xml).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-1</requestId><return>true</return></CreateTagsResponse>',
    );
  });

  it('keeps element order as written and writes empty lists as empty elements', () => {
    const xml = el(
      'x',
      items('instancesSet', [[leaf('currentState', 'a'), leaf('previousState', 'b')]]),
      items('groupSet', []),
    ).raw;
    expect(xml).toBe(
      '<x><instancesSet><item><currentState>a</currentState><previousState>b</previousState></item></instancesSet><groupSet/></x>',
    );
  });

  it('leaves out absent members', () => {
    expect(el('x', leaf('nextToken', undefined)).raw).toBe('<x/>');
  });

  it('cannot be broken out of by a user-supplied tag value', () => {
    const evil = '</value></item></tagSet><injected>1</injected><tagSet><item><value>';
    const doc = responseDocument('DescribeTags', 'r', [
      items('tagSet', [[leaf('key', 'k'), leaf('value', evil)]]),
    ]);
    const parsed = new XMLParser().parse(doc.raw);
    expect(parsed.DescribeTagsResponse.tagSet.item.value).toBe(evil);
    expect(parsed.DescribeTagsResponse.injected).toBeUndefined();
  });

  it('keeps a large document in bounded parts that read and encode as the one string would', () => {
    const values = Array.from({ length: 3000 }, (_, i) => `välue-${i} ✓ <${i}> 😀`);
    const doc = responseDocument('DescribeTags', 'r', [
      items(
        'tagSet',
        values.map((v) => [leaf('key', 'k'), leaf('value', v)]),
      ),
    ]);
    expect(doc.parts.length).toBeGreaterThan(5);
    for (const part of doc.parts) expect(part.length).toBeLessThan(17 * 1024);
    const whole =
      '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><tagSet>' +
      values.map((v) => `<item><key>k</key><value>${escapeXml(v)}</value></item>`).join('') +
      '</tagSet></DescribeTagsResponse>';
    expect(doc.raw).toBe(whole);
    expect(utf8(doc).equals(Buffer.from(whole))).toBe(true);
    expect(new XMLParser().parse(utf8(doc).toString()).DescribeTagsResponse.tagSet.item[2999].value).toBe(
      values[2999],
    );
  });

  it('writes errors in EC2 shape with a capitalised RequestID, escaping the message', () => {
    expect(errorDocument('InvalidAction', 'The action <X> is not valid', 'r-1')).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>InvalidAction</Code><Message>The action &lt;X&gt; is not valid</Message></Error></Errors><RequestID>r-1</RequestID></Response>',
    );
  });
});

describe('ec2Time', () => {
  it('writes ISO 8601 UTC with milliseconds, the same the first time and every time after', () => {
    const times = [0, 1_700_000_000_123, 1_700_000_000_124, Date.UTC(2024, 4, 1, 12)].map(
      (ms) => new Date(ms),
    );
    const first = times.map(ec2Time);
    expect(first).toEqual(times.map((d) => d.toISOString()));
    expect(times.map(ec2Time)).toEqual(first);
    expect(ec2Time(new Date(Date.UTC(2024, 4, 1, 12)))).toBe('2024-05-01T12:00:00.000Z');
  });
});
