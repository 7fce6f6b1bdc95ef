import {isUtf8} from 'node:buffer';
import fc from 'fast-check';
import {describe, expect, it} from 'vitest';
import {LineReader, parseRequest, type FieldLimits} from '../../src/protocol.js';

const limits: FieldLimits = {maxUserBytes: 256, maxPasswordBytes: 511, maxServiceBytes: 64};

const parse = (text: string | Buffer) => parseRequest(Buffer.isBuffer(text) ? text : Buffer.from(text), limits);

/** Everything the reader hands out, with the line buffers copied before the next call. */
function drain(reader: LineReader): Array<string | 'overlong'> {
	const lines: Array<string | 'overlong'> = [];
	for (let line = reader.next(); line !== undefined; line = reader.next()) {
		lines.push(line === 'overlong' ? line : line.toString('latin1'));
		if (line === 'overlong') {
			break;
		}
	}

	return lines;
}

describe('parseRequest', () => {
	it('reads the three fields of a request', () => {
		const request = parse('alice\rsecret\rx2gobroker');
		expect(request).toMatchObject({kind: 'request'});
		if (request.kind === 'request') {
			expect(request.user.toString()).toBe('alice');
			expect(request.password.toString()).toBe('secret');
			expect(request.service.toString()).toBe('x2gobroker');
		}
	});

	it.each([
		['alice\rsecret', 'expected 3 fields, got 2'],
		['alice\rsecret\rx2gobroker\r', 'expected 3 fields, got 4'],
		['alice\rsec\rret\rx2gobroker', 'expected 3 fields, got 4'],
		['', 'expected 3 fields, got 1'],
		['\rsecret\rx2gobroker', 'empty user'],
		['alice\r\rx2gobroker', 'empty password'],
		['alice\rsecret\r', 'empty service'],
		['alice\rsec\0ret\rx2gobroker', 'NUL byte in password'],
		['al\0ice\rsecret\rx2gobroker', 'NUL byte in user'],
		[`${'u'.repeat(257)}\rsecret\rx2gobroker`, 'user longer than 256 bytes'],
		[`alice\r${'p'.repeat(512)}\rx2gobroker`, 'password longer than 511 bytes'],
		[`alice\rsecret\r${'s'.repeat(65)}`, 'service longer than 64 bytes'],
	])('answers %j as malformed: %s', (line, reason) => {
		expect(parse(line)).toMatchObject({kind: 'malformed', reason});
	});

	it('takes fields of exactly their limit', () => {
		expect(parse(`${'u'.repeat(256)}\r${'p'.repeat(511)}\r${'s'.repeat(64)}`).kind).toBe('request');
	});

	it('refuses invalid UTF-8 in any field', () => {
		const line = Buffer.concat([Buffer.from('alice\r'), Buffer.from([0xC3, 0x28]), Buffer.from('\rx2gobroker')]);
		expect(parse(line)).toMatchObject({kind: 'malformed', reason: 'password is not valid UTF-8'});
	});

	it('describes a malformed request by its shape, never its bytes', () => {
		const result = parse('alice\rhunter2\rx2gobroker\r');
		expect(result).toMatchObject({kind: 'malformed', shape: 'fields=4 bytes=5,7,10,0'});
		expect(JSON.stringify(result)).not.toContain('hunter2');
	});

	it('never yields a request for a line outside the protocol (property)', () => {
		const byte = fc.oneof(fc.constantFrom(0, 0x0D, 0x80, 0xFF, 0xC3), fc.integer({min: 0, max: 255}));
		fc.assert(fc.property(fc.array(byte, {maxLength: 900}), bytes => {
			const line = Buffer.from(bytes.filter(value => value !== 0x0A));
			const fields = line.toString('latin1').split('\r').map(field => Buffer.from(field, 'latin1'));
			const valid = fields.length === 3
				&& fields.every((field, index) => field.length > 0
					&& field.length <= [limits.maxUserBytes, limits.maxPasswordBytes, limits.maxServiceBytes][index]!
					&& !field.includes(0)
					&& isUtf8(field));
			expect(parse(line).kind).toBe(valid ? 'request' : 'malformed');
		}), {numRuns: 2000});
	});
});

describe('LineReader', () => {
	it('joins a line split across chunks, down to single bytes', () => {
		const reader = new LineReader(4096);
		const lines: string[] = [];
		for (const byte of Buffer.from('alice\rsecret\rx2gobroker\nbob')) {
			reader.push(Buffer.from([byte]));
			lines.push(...drain(reader));
		}

		expect(lines).toEqual(['alice\rsecret\rx2gobroker']);
		expect(reader.bufferedBytes).toBe(3);
	});

	it('hands out many lines from one chunk', () => {
		const reader = new LineReader(4096);
		reader.push(Buffer.from('a\rb\rc\nd\re\rf\n\ng\rh'));
		expect(drain(reader)).toEqual(['a\rb\rc', 'd\re\rf', '']);
	});

	it('says `overlong` as soon as an unfinished line passes the limit, and holds nothing after', () => {
		const reader = new LineReader(16);
		reader.push(Buffer.from('x'.repeat(16)));
		expect(reader.next()).toBeUndefined();
		reader.push(Buffer.from('y'));
		expect(reader.next()).toBe('overlong');
		expect(reader.bufferedBytes).toBe(0);
	});

	it('takes a line of exactly the limit', () => {
		const reader = new LineReader(16);
		reader.push(Buffer.from(`${'x'.repeat(16)}\n`));
		expect(drain(reader)).toEqual(['x'.repeat(16)]);
	});

	it('zeroes the bytes it copies away from', () => {
		const reader = new LineReader(4096);
		const first = Buffer.from('alice\rsec');
		reader.push(first);
		expect(reader.next()).toBeUndefined();
		reader.push(Buffer.from('ret\rx2gobroker\n'));
		expect(first.every(byte => byte === 0)).toBe(true);
		expect(reader.next()?.toString()).toBe('alice\rsecret\rx2gobroker');
	});

	it('gives the same lines however the stream is cut (property)', () => {
		const lineArbitrary = fc.string({unit: fc.constantFrom('a', 'b', '\r', '\0', 'é', '\n'), maxLength: 40});
		fc.assert(fc.property(fc.array(lineArbitrary, {maxLength: 30}), fc.array(fc.integer({min: 1, max: 50}), {minLength: 1, maxLength: 20}), (parts, cuts) => {
			const stream = Buffer.from(parts.join('\n'));
			const whole = new LineReader(32);
			whole.push(Buffer.from(stream));
			const expected = drain(whole);

			const chunked = new LineReader(32);
			const actual: Array<string | 'overlong'> = [];
			let offset = 0;
			for (let index = 0; offset < stream.length; index++) {
				const size = cuts[index % cuts.length]!;
				chunked.push(Buffer.from(stream.subarray(offset, offset + size)));
				offset += size;
				if (actual.at(-1) !== 'overlong') {
					actual.push(...drain(chunked));
				}
			}

			expect(actual).toEqual(expected);
		}), {numRuns: 1000});
	});
});
