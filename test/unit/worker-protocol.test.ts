/**
The worker's response frames, as the daemon reads them from a pipe: whole, several in one chunk,
or cut anywhere.
*/
import {describe, expect, it} from 'vitest';
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
	});
});
