/**
The worker's response frames, as the daemon reads them from a pipe: whole, several in one chunk,
or cut anywhere.
*/
import {describe, expect, it, vi} from 'vitest';
import {maxResponsePayloadBytes, ResponseReader, WorkerProtocolError} from '../../src/worker-protocol.js';

function frame(payload: string): Buffer {
	const bytes = Buffer.from(payload);
	const length = Buffer.alloc(4);
	length.writeUInt32LE(bytes.length);
	return Buffer.concat([length, bytes]);
}

describe('ResponseReader', () => {
	const stream = Buffer.concat([frame('first'), frame(''), frame('third, a little longer')]);
	const expected = ['first', '', 'third, a little longer'];

	it('reads several frames from one chunk', () => {
		expect(new ResponseReader().push(stream).map(payload => payload.toString())).toEqual(expected);
	});

	it('reads the same frames however the chunks are cut', () => {
		for (let cut = 1; cut < stream.length; cut++) {
			const reader = new ResponseReader();
			const payloads = [...reader.push(stream.subarray(0, cut)), ...reader.push(stream.subarray(cut))];
			expect(payloads.map(payload => payload.toString()), `cut at ${cut}`).toEqual(expected);
		}

		const reader = new ResponseReader();
		const oneByteAtATime = [...stream].flatMap(byte => reader.push(Buffer.from([byte])));
		expect(oneByteAtATime.map(payload => payload.toString())).toEqual(expected);
	});

	it('refuses a frame announcing more than maxResponsePayloadBytes', () => {
		const header = Buffer.alloc(4);
		header.writeUInt32LE(maxResponsePayloadBytes + 1);
		expect(() => new ResponseReader().push(header)).toThrow(WorkerProtocolError);

		// Also when the length prefix comes a byte at a time, after a whole frame.
		const reader = new ResponseReader();
		const bytes = [...Buffer.concat([frame('whole'), header])];
		expect(bytes.slice(0, -1).flatMap(byte => reader.push(Buffer.from([byte]))).map(payload => payload.toString())).toEqual(['whole']);
		expect(() => reader.push(Buffer.from(bytes.slice(-1)))).toThrow(WorkerProtocolError);
	});

	it('joins a frame that comes in many chunks once, when it is complete', () => {
		const payload = Buffer.alloc(maxResponsePayloadBytes, 'x');
		payload.write('first bytes');
		payload.write('last bytes', payload.length - 'last bytes'.length);
		const whole = frame(payload.toString());
		const concat = vi.spyOn(Buffer, 'concat');
		try {
			const reader = new ResponseReader();
			const chunkBytes = 4096;
			const payloads: Buffer[] = [];
			// The first chunk ends inside the length prefix.
			payloads.push(...reader.push(whole.subarray(0, 2)));
			for (let offset = 2; offset < whole.length; offset += chunkBytes) {
				expect(payloads).toHaveLength(0);
				payloads.push(...reader.push(whole.subarray(offset, offset + chunkBytes)));
			}

			expect(payloads).toHaveLength(1);
			expect(payloads[0]!.equals(payload)).toBe(true);
			// The prefix joined once it was whole, the frame once it was complete: not once a chunk.
			expect(concat.mock.calls.length).toBeLessThanOrEqual(2);
		} finally {
			concat.mockRestore();
		}
	});
});
