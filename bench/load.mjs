// The load generator, run as its own process: `node bench/load.mjs '<json spec>'` prints one JSON
// line of results. Every answer is checked: a right password must get ok, a wrong one fail.
//
// spec: {socket, protocol: 'line' | 'sasl', mode: 'oneshot' | 'pipelined', clients, depth, seconds,
//        count (oneshot: requests per client instead of seconds), wrongShare (0..1), users, service, timeoutMs}
import net from 'node:net';

const spec = JSON.parse(process.argv[2]);
const users = spec.users ?? 1000;
const service = spec.service ?? 'x2gobroker';
let sequence = 0;

/** The next request: a user of the passdb, its right password or (for wrongShare of them) a wrong one. */
function nextRequest() {
	const index = sequence++ % users;
	const wrong = spec.wrongShare > 0 && (sequence * 0.618_033_988_75) % 1 < spec.wrongShare;
	return {user: `u${index}`, password: wrong ? `wrong-${index}` : `pw-${index}-secret`, expect: wrong ? 'fail' : 'ok'};
}

function encode({user, password}) {
	if (spec.protocol === 'sasl') {
		// saslauthd: user, password, service, realm, each a big-endian u16 length and the bytes.
		return Buffer.concat([user, password, service, ''].map(field => {
			const bytes = Buffer.from(field);
			const length = Buffer.alloc(2);
			length.writeUInt16BE(bytes.length);
			return Buffer.concat([length, bytes]);
		}));
	}

	return Buffer.from(`${user}\r${password}\r${service}\n`);
}

/** Answers complete in `buffer`, as ok/fail, and the bytes left over. */
function decode(buffer) {
	const answers = [];
	let offset = 0;
	if (spec.protocol === 'sasl') {
		while (buffer.length - offset >= 2) {
			const length = buffer.readUInt16BE(offset);
			if (buffer.length - offset < 2 + length) {
				break;
			}

			answers.push(buffer.toString('latin1', offset + 2, offset + 2 + length).startsWith('OK') ? 'ok' : 'fail');
			offset += 2 + length;
		}
	} else {
		for (let end = buffer.indexOf(10, offset); end !== -1; end = buffer.indexOf(10, offset)) {
			answers.push(buffer.toString('latin1', offset, end));
			offset = end + 1;
		}
	}

	return {answers, rest: buffer.subarray(offset)};
}

const latencies = [];
let done = 0;
let mismatches = 0;
let errors = 0;
const deadline = performance.now() + spec.seconds * 1000;

function record(expected, answer, started) {
	done++;
	latencies.push(performance.now() - started);
	if (answer !== expected) {
		mismatches++;
	}
}

async function connect() {
	return new Promise((resolve, reject) => {
		const socket = net.connect(spec.socket);
		socket.once('connect', () => {
			socket.off('error', reject);
			resolve(socket);
		});
		socket.once('error', reject);
	});
}

/** One request per connection, as x2gobroker's own client asks. */
async function oneshotClient() {
	// `count`: exactly that many requests (a single login), whatever the time.
	for (let sent = 0; spec.count === undefined ? performance.now() < deadline : sent < spec.count; sent++) {
		const request = nextRequest();
		const started = performance.now();
		// eslint-disable-next-line no-await-in-loop
		await new Promise(resolve => {
			const socket = net.connect(spec.socket);
			let buffer = Buffer.alloc(0);
			const timer = setTimeout(() => {
				errors++;
				socket.destroy();
				resolve();
			}, spec.timeoutMs ?? 10_000);
			socket.once('connect', () => socket.write(encode(request)));
			socket.on('data', chunk => {
				buffer = Buffer.concat([buffer, chunk]);
				const {answers} = decode(buffer);
				if (answers.length > 0) {
					clearTimeout(timer);
					record(request.expect, answers[0], started);
					socket.destroy();
					resolve();
				}
			});
			socket.on('error', () => {
				clearTimeout(timer);
				errors++;
				resolve();
			});
		});
	}
}

/** Many requests in flight on one kept connection. */
async function pipelinedClient() {
	const socket = await connect();
	const inFlight = [];
	let buffer = Buffer.alloc(0);
	await new Promise(resolve => {
		const send = () => {
			const batch = [];
			while (inFlight.length < (spec.depth ?? 16) && performance.now() < deadline) {
				const request = nextRequest();
				inFlight.push({expect: request.expect, started: performance.now()});
				batch.push(encode(request));
			}

			if (batch.length > 0) {
				socket.write(Buffer.concat(batch));
			}

			if (inFlight.length === 0) {
				socket.destroy();
				resolve();
			}
		};

		socket.on('data', chunk => {
			buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
			const {answers, rest} = decode(buffer);
			buffer = rest;
			for (const answer of answers) {
				const {expect, started} = inFlight.shift();
				record(expect, answer, started);
			}

			send();
		});
		socket.on('error', () => {
			errors++;
			resolve();
		});
		send();
	});
}

const started = performance.now();
const startUsage = process.cpuUsage();
await Promise.all(Array.from({length: spec.clients}, async () => (spec.mode === 'pipelined' ? pipelinedClient() : oneshotClient()).catch(() => {
	errors++;
})));
const seconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(startUsage);
latencies.sort((a, b) => a - b);
const quantile = q => latencies.length === 0 ? null : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] * 1000) / 1000;
process.stdout.write(`${JSON.stringify({
	done,
	rate: Math.round(done / seconds),
	p50Ms: quantile(0.5),
	p99Ms: quantile(0.99),
	mismatches,
	errors,
	loadCpuShare: Math.round((cpu.user + cpu.system) / 1e4 / seconds) / 100,
})}\n`);
